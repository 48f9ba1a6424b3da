from .safe_loops import SafeEpochBasedTrainLoop
from .safe_runner import SafeRunner, UnknownTypeError, state_dict_mismatches

__all__ = [
    'SafeRunner', 'SafeEpochBasedTrainLoop', 'UnknownTypeError',
    'state_dict_mismatches'
]
