"""A local file backend whose writes are atomic (mmengine extension point)."""
from mmengine.fileio import LocalBackend, register_backend

from .atomic_io import atomic_write_bytes, atomic_write_text


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` with ``put``/``put_text`` written to a
    temporary file, fsync-ed and renamed (:mod:`skd_bnn_mm.utils.atomic_io`).

    mmengine's ``save_checkpoint`` serialises to memory and calls
    ``backend.put``; with ``backend_args=dict(backend='atomic_local')`` a kill
    or a full disk during the write leaves the previous file intact instead
    of a truncated one under the checkpoint name. ``SafeRunner`` passes it
    for every local checkpoint.
    """

    def put(self, obj: bytes, filepath) -> None:
        atomic_write_bytes(str(filepath), obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write_text(str(filepath), obj, encoding=encoding)


register_backend('atomic_local', AtomicLocalBackend, force=True)
