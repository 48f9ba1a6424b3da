__all__ = []
from .ede_hook import EDEHook, ede_schedule  # noqa: E402
__all__ += ['EDEHook', 'ede_schedule']
from .soft_label_bank_hook import SoftLabelBankHook  # noqa: E402
__all__ += ['SoftLabelBankHook']
