from .amp import (AMP_CHOICES, amp_optim_wrapper_cfg, config_amp,
                  default_amp)
from .autocast_optim_wrapper import AutocastOptimWrapper

__all__ = [
    'AutocastOptimWrapper', 'AMP_CHOICES', 'amp_optim_wrapper_cfg', 'config_amp',
    'default_amp'
]
