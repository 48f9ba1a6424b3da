from .atomic_backend import AtomicLocalBackend
from .atomic_io import (atomic_torch_save, atomic_write, atomic_write_bytes,
                        atomic_write_text, is_temp_file)
from .checkpoint import (CheckpointError, CorruptCheckpointError,
                         UnsafeCheckpointError, load_checkpoint_file,
                         safe_globals, state_dict_mismatches,
                         state_dict_problems)
from .registry_check import unknown_types
from .safe_types import (UnsafeTypeError, check_registered_types,
                         unsafe_types)

__all__ = [
    'AtomicLocalBackend',
    'CheckpointError', 'CorruptCheckpointError', 'UnsafeCheckpointError',
    'load_checkpoint_file', 'safe_globals', 'atomic_write',
    'atomic_write_bytes', 'atomic_write_text', 'atomic_torch_save',
    'is_temp_file', 'unknown_types', 'UnsafeTypeError',
    'check_registered_types', 'unsafe_types', 'state_dict_problems',
    'state_dict_mismatches'
]
