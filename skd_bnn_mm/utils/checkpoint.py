"""Safe checkpoint loading for every load path of mmengine.

PyTorch >= 2.6 loads with ``weights_only=True`` by default, and mmengine
0.10.x stores a few Python objects in its checkpoints (``HistoryBuffer``,
numpy scalars and dtypes, ``ConfigDict`` in ``meta``), so a plain resume
fails. Rather than switching that safety off, we replace mmengine's local-file
loader with one that keeps ``weights_only=True`` and admits an explicit
allow-list only while the file is read. Resume, ``load_from``, ``test.py`` and
our export tools all go through ``CheckpointLoader`` and so through here.
"""
import os.path as osp
import pickle
import zipfile
from collections import OrderedDict, defaultdict
from typing import Dict, List

import numpy as np
import torch
from mmengine.runner.checkpoint import CheckpointLoader


def _numpy_globals() -> List:
    items = [np.dtype, np.ndarray]
    core = getattr(np, '_core', None) or getattr(np, 'core')
    multiarray = core.multiarray
    items += [multiarray._reconstruct, multiarray.scalar]
    # dtype classes (numpy>=1.25 pickles e.g. ``numpy.dtypes.Float64DType``)
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        items += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return items


def checkpoint_getattr(obj, name):
    """The only ``getattr`` a checkpoint may call.

    mmengine pickles the statistics methods a ``HistoryBuffer`` keeps as
    ``getattr(HistoryBuffer, 'min')``. The builtin ``getattr`` itself must not
    be on the allow-list: from any allowed object it reaches every attribute
    (``f.__globals__``: a module's namespace, which the unpickler may then
    modify with SETITEM; ``getattr.__self__``: the builtins), so a file could
    rewrite modules of the running process while it is loaded. This
    stand-in, registered under the name ``builtins.getattr``, resolves only
    the statistics methods of ``HistoryBuffer``.
    """
    from mmengine.logging import HistoryBuffer
    allowed = {'min', 'max', 'current', 'mean'} | set(
        HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and isinstance(name, str) and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'Unsupported global: getattr({obj!r}, {name!r}) is not allowed '
        '(only the statistics methods of mmengine HistoryBuffer)')


def safe_globals() -> List:
    """The allow-list: what mmengine and mmpretrain put in a checkpoint.

    Items are objects, or ``(object, 'module.name')`` pairs that stand in
    for the global of that name.
    """
    from mmengine.config import ConfigDict
    from mmengine.logging import HistoryBuffer
    items = [HistoryBuffer, ConfigDict, OrderedDict, defaultdict, dict, list,
             set, tuple, (checkpoint_getattr, 'builtins.getattr')]
    items += _numpy_globals()
    return items


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used (missing, corrupt or unsafe)."""


class CorruptCheckpointError(CheckpointError):
    """An empty, truncated or otherwise unreadable checkpoint file.

    Usually the trace of an interrupted save; an automatic resume may fall
    back to an earlier checkpoint.
    """


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that holds objects outside the allow-list.

    Never skipped silently: such a file may have been planted.
    """


def load_checkpoint_file(filename: str, map_location=None):
    """Read a local checkpoint with ``weights_only=True`` and the allow-list.

    Raises :class:`CheckpointError` with a message that says what to do for a
    missing, empty, truncated or corrupt file and for a file that carries
    objects outside the allow-list (for example a pickled callable); such a
    file is never executed.
    """
    filename = osp.expanduser(str(filename))
    if not osp.isfile(filename):
        raise CheckpointError(
            f'Checkpoint "{filename}" does not exist. Check the path given to '
            '--resume / load_from / test.py, or omit --resume to resume from '
            'the last checkpoint of the work dir.')
    if osp.getsize(filename) == 0:
        raise CorruptCheckpointError(
            f'Checkpoint "{filename}" is empty (0 bytes), probably from an '
            'interrupted save. Use an earlier checkpoint of the work dir.')
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(filename, map_location=map_location,
                              weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if 'Weights only load failed' in msg or 'Unsupported global' in msg \
                or 'unsupported' in msg.lower():
            raise UnsafeCheckpointError(
                f'Refused to load "{filename}": it contains Python objects '
                'outside the allow-list of skd_bnn_mm.utils.checkpoint '
                '(weights_only=True). Nothing from it was executed. If you '
                'trust the file and it only holds plain data, re-save its '
                'state_dict with torch.save; never load untrusted pickles.\n'
                f'Details: {msg.splitlines()[0] if msg else e!r}') from None
        raise CorruptCheckpointError(
            f'Checkpoint "{filename}" is corrupt or not a PyTorch checkpoint '
            f'({msg or type(e).__name__}). Use an earlier checkpoint.') from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError,
            ValueError) as e:
        raise CorruptCheckpointError(
            f'Checkpoint "{filename}" is truncated or corrupt '
            f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}).'
            ' It was probably cut short by an interrupted save; use an earlier '
            'checkpoint of the work dir.') from None


#: state entries that count something and can never be negative
COUNTERS = ('counts', 'last_counts', 'num_updates', 'num_batches_tracked')


def state_dict_problems(state_dict, limit: int = 8) -> List[str]:
    """What makes a loaded state dict unusable, one line per key.

    NaN/inf in a floating-point tensor (a run that diverged before it was
    saved, or a damaged file), and negative values in counters
    (:data:`COUNTERS`: the soft-label bank's counts and ``num_updates``,
    BatchNorm's ``num_batches_tracked``).
    """
    problems = []
    for key, value in state_dict.items():
        if not torch.is_tensor(value):
            continue
        if value.is_floating_point() or value.is_complex():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                problems.append(f'{key} holds {bad} NaN/inf value(s) of '
                                f'{value.numel()}')
        elif key.rsplit('.', 1)[-1] in COUNTERS and value.numel() and \
                int(value.min()) < 0:
            problems.append(f'{key} is negative ({int(value.min())}), a '
                            'count cannot be')
    if len(problems) > limit:
        problems = problems[:limit] + [f'... and {len(problems) - limit} more']
    return problems


def state_dict_mismatches(model_state: Dict, ckpt_state: Dict,
                          limit: int = 8) -> List[str]:
    """Human-readable differences between two state dicts (keys and shapes)."""
    ckpt_state = {k[len('module.'):] if k.startswith('module.') else k: v
                  for k, v in ckpt_state.items()}
    problems = []
    for key, value in model_state.items():
        if key not in ckpt_state:
            problems.append(f'missing in checkpoint: {key}')
        elif tuple(ckpt_state[key].shape) != tuple(value.shape):
            problems.append(
                f'{key}: checkpoint {tuple(ckpt_state[key].shape)} vs model '
                f'{tuple(value.shape)}')
    problems += [f'not in model: {key}' for key in ckpt_state
                 if key not in model_state]
    if len(problems) > limit:
        problems = problems[:limit] + [f'... and {len(problems) - limit} more']
    return problems


def _load_from_local(filename, map_location):
    return load_checkpoint_file(filename, map_location)


# Same name pattern as mmengine's loaders (it logs ``__name__[10:]``).
_load_from_local.__name__ = 'load_from_local_safe'

CheckpointLoader.register_scheme(prefixes='', loader=_load_from_local,
                                 force=True)
