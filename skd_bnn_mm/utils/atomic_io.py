"""Atomic file writes: a reader sees the old file or the new one, never half.

A checkpoint written in place (``open(path, 'wb')``) and cut short by a kill,
an out-of-memory or a full disk leaves a truncated file under the final name,
and ``--resume`` then picks it. Here the data goes to a hidden temporary file
in the same folder, which is flushed and ``fsync``-ed, then renamed over the
target with :func:`os.replace` (atomic on POSIX and Windows when both are on
the same file system), and the folder entry is ``fsync``-ed too, so that the
rename itself survives a power loss.

An interrupted write leaves only a temporary file named
``.{target}.tmp-{pid}-{random}``; it never matches a checkpoint name, and the
next write of the same target removes it.
"""
import contextlib
import glob
import os
import os.path as osp
import uuid
from typing import IO, Iterator

TMP_INFIX = '.tmp-'


def temp_path_for(path: str) -> str:
    """A fresh hidden temporary name next to ``path``."""
    folder, name = osp.split(osp.abspath(path))
    return osp.join(folder,
                    f'.{name}{TMP_INFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}')


def is_temp_file(path: str) -> bool:
    """Whether ``path`` is a leftover of an interrupted atomic write."""
    name = osp.basename(path)
    return name.startswith('.') and TMP_INFIX in name


def stale_temp_files(path: str):
    """Leftovers of interrupted writes of ``path`` (same folder and name)."""
    folder, name = osp.split(osp.abspath(path))
    return sorted(glob.glob(osp.join(glob.escape(folder),
                                     f'.{glob.escape(name)}{TMP_INFIX}*')))


def fsync_dir(folder: str) -> None:
    """Persist a folder's entries (a rename); a no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'wb',
                 encoding: str = None) -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` when the block succeeds.

    If the block raises, the temporary file is removed and ``path`` keeps its
    previous content (or stays absent). Leftovers of earlier interrupted
    writes of the same target are removed first.

    Example::

        with atomic_write('epoch_3.pth') as f:
            torch.save(checkpoint, f)
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f"atomic_write supports mode 'w' or 'wb', got "
                         f'{mode!r}')
    path = osp.abspath(path)
    folder = osp.dirname(path)
    os.makedirs(folder, exist_ok=True)
    for leftover in stale_temp_files(path):
        with contextlib.suppress(OSError):
            os.remove(leftover)
    tmp = temp_path_for(path)
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_dir(folder)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, 'wb') as f:
        f.write(data)


def atomic_write_text(path: str, text: str, encoding: str = 'utf-8') -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path, 'w', encoding=encoding) as f:
        f.write(text)


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save(obj, path)``, atomically (streamed, no copy in memory)."""
    import torch
    with atomic_write(path, 'wb') as f:
        torch.save(obj, f)
