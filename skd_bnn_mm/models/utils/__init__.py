from .binarize import (BinarizeReport, binarize, binary_conv_names,
                       relu_to_hardtanh, unbinarize)
from .binary_input_check import (BinaryInputCheck, NonNegativeBinaryInputError,
                                 NonNegativeBinaryInputWarning,
                                 arm_binary_input_check,
                                 find_nonnegative_inputs)
from .signed_activations import (ActivationReport, replace_activations,
                                 sign_losing_activations)
from .module_swap import SwapReport, swap_modules
from .tensor_forward import tensor_forward
from .official_weights import (OFFICIAL_LAYOUTS, convert_official_checkpoint,
                               convert_official_state_dict)

__all__ = [
    'BinarizeReport', 'binarize', 'binary_conv_names', 'relu_to_hardtanh',
    'unbinarize', 'OFFICIAL_LAYOUTS', 'convert_official_checkpoint',
    'convert_official_state_dict', 'BinaryInputCheck',
    'NonNegativeBinaryInputError', 'NonNegativeBinaryInputWarning',
    'arm_binary_input_check', 'find_nonnegative_inputs', 'ActivationReport',
    'replace_activations', 'sign_losing_activations', 'SwapReport',
    'swap_modules', 'tensor_forward'
]
