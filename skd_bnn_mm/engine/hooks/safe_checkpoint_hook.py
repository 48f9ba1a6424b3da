"""mmengine's CheckpointHook that removes old files only after a new one is
safely written."""
import contextlib
from typing import List, Tuple

from mmengine.hooks import CheckpointHook
from mmpretrain.registry import HOOKS


class _DeferredRemovals:
    """A file backend whose ``remove``/``rmtree`` are only recorded."""

    def __init__(self, backend, pending: List[Tuple[str, str]]) -> None:
        self._backend = backend
        self._pending = pending

    def remove(self, path) -> None:
        self._pending.append(('remove', path))

    def rmtree(self, path) -> None:
        self._pending.append(('rmtree', path))

    def __getattr__(self, name):
        return getattr(self._backend, name)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """:class:`~mmengine.hooks.CheckpointHook` that never loses the last good
    checkpoint.

    mmengine removes the oldest kept checkpoint (``max_keep_ckpts``) and the
    previous best one *before* it writes the new file; when that write fails
    (a full disk, a quota, a kill) the run is left with neither, and
    ``last_checkpoint`` names the file that was never written. Here the
    removals of one save are held back and done only after the new
    checkpoint and the ``last_checkpoint`` pointer were written (the runner
    writes both atomically, see ``SafeRunner``); if the save fails, every
    older file stays. Everything else is mmengine's hook.
    """

    @contextlib.contextmanager
    def _remove_after_success(self):
        backend = self.file_backend
        pending: List[Tuple[str, str]] = []
        self.file_backend = _DeferredRemovals(backend, pending)
        try:
            yield
        finally:
            self.file_backend = backend
        for kind, path in pending:  # reached only if the save succeeded
            getattr(backend, kind)(path)

    def _save_checkpoint_with_step(self, runner, step, meta):
        with self._remove_after_success():
            super()._save_checkpoint_with_step(runner, step, meta)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        with self._remove_after_success():
            super()._save_best_checkpoint(runner, metrics)
