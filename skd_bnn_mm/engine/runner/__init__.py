from skd_bnn_mm.utils.checkpoint import state_dict_mismatches
from .safe_loops import SafeEpochBasedTrainLoop
from .safe_runner import SafeRunner, UnknownTypeError

__all__ = [
    'SafeRunner', 'SafeEpochBasedTrainLoop', 'UnknownTypeError',
    'state_dict_mismatches'
]
