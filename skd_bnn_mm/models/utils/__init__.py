from .binarize import (BinarizeReport, binarize, binary_conv_names,
                       relu_to_hardtanh, unbinarize)

__all__ = [
    'BinarizeReport', 'binarize', 'binary_conv_names', 'relu_to_hardtanh',
    'unbinarize'
]
