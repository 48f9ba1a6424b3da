__all__ = []
from .ede_hook import EDEHook, ede_schedule  # noqa: E402
__all__ += ['EDEHook', 'ede_schedule']
from .soft_label_bank_hook import SoftLabelBankHook  # noqa: E402
__all__ += ['SoftLabelBankHook']
from .fast_path_hook import FastPathHook  # noqa: E402
__all__ += ['FastPathHook']
from .epoch_seed_hook import EpochSeedHook  # noqa: E402
__all__ += ['EpochSeedHook']
from .rank_consistency_hook import RankConsistencyHook  # noqa: E402
__all__ += ['RankConsistencyHook']
from .finite_loss_hook import FiniteLossHook  # noqa: E402
__all__ += ['FiniteLossHook']
from .safe_checkpoint_hook import SafeCheckpointHook  # noqa: E402
__all__ += ['SafeCheckpointHook']
from .setup_check_hook import SetupCheckHook  # noqa: E402
__all__ += ['SetupCheckHook']
from .binary_input_check_hook import BinaryInputCheckHook  # noqa: E402
__all__ += ['BinaryInputCheckHook']
from .resume_check_hook import ResumeCheckHook  # noqa: E402
__all__ += ['ResumeCheckHook']
