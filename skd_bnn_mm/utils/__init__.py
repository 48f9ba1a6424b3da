from .checkpoint import CheckpointError, load_checkpoint_file, safe_globals

__all__ = ['CheckpointError', 'load_checkpoint_file', 'safe_globals']
