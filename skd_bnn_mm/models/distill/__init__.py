from .recorder import UnitRecorder, flatten_records
from .soft_label_bank import SoftLabelBank
from .teacher import SelfTeacher

__all__ = ['SelfTeacher', 'SoftLabelBank', 'UnitRecorder', 'flatten_records']
