from .recorder import OutputRecorder, flatten_records, resolve_units
from .soft_label_bank import SoftLabelBank
from .teacher import SelfTeacher, ValueSwapConv

__all__ = [
    'OutputRecorder', 'SelfTeacher', 'SoftLabelBank', 'ValueSwapConv',
    'flatten_records', 'resolve_units'
]
