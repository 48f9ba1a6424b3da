from .clamp import Clamp
from .hardtanh import Hardtanh
from .ir_conv2d import IRConv2d
from .sign import SIGN_METHODS, binary_sign

__all__ = ['Clamp', 'Hardtanh', 'IRConv2d', 'SIGN_METHODS', 'binary_sign']
