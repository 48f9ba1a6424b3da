from .binarize import (BinarizeReport, binarize, binary_conv_names,
                       relu_to_hardtanh, unbinarize)
from .crop_flip_data_preprocessor import (CropFlipClsDataPreprocessor,
                                          crop_flip_batch)

__all__ = [
    'BinarizeReport', 'binarize', 'binary_conv_names', 'relu_to_hardtanh',
    'unbinarize', 'CropFlipClsDataPreprocessor', 'crop_flip_batch'
]
