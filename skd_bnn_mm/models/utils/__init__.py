from .binarize import (BinarizeReport, binarize, binary_conv_names,
                       relu_to_hardtanh, unbinarize)
from .crop_flip_data_preprocessor import (CropFlipClsDataPreprocessor,
                                          crop_flip_batch)
from .official_weights import (OFFICIAL_LAYOUTS, convert_official_checkpoint,
                               convert_official_state_dict)

__all__ = [
    'BinarizeReport', 'binarize', 'binary_conv_names', 'relu_to_hardtanh',
    'unbinarize', 'CropFlipClsDataPreprocessor', 'crop_flip_batch',
    'OFFICIAL_LAYOUTS', 'convert_official_checkpoint',
    'convert_official_state_dict'
]
