"""Which checkpoint files an automatic resume may use, newest first."""
import os
import os.path as osp
import re
from typing import List, Optional, Sequence, Tuple

from skd_bnn_mm.utils.atomic_io import is_temp_file

POINTER = 'last_checkpoint'


def name_regex(filename_tmpls: Sequence[str]) -> 're.Pattern':
    """Regex matching the names of ``CheckpointHook.filename_tmpl`` values
    (``'epoch_{}.pth'``), with the step number as group 1."""
    parts = [re.escape(t).replace(r'\{\}', r'(\d+)') for t in filename_tmpls]
    return re.compile('^(?:' + '|'.join(parts) + ')$')


def _step(regex, name: str) -> Optional[int]:
    match = regex.match(name)
    if not match:
        return None
    return int(next(g for g in match.groups() if g is not None))


def read_pointer(work_dir: str) -> Tuple[Optional[str], Optional[str]]:
    """``(path, problem)``: the file named by ``work_dir/last_checkpoint``.

    ``problem`` says why it is unusable (empty pointer, missing file); both
    are None when there is no pointer. A remote path (``s3://...``) is
    returned as it is, without a check.
    """
    pointer = osp.join(work_dir, POINTER)
    if not osp.isfile(pointer):
        return None, None
    try:
        with open(pointer, encoding='utf-8') as f:
            target = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        return None, f'"{pointer}" cannot be read ({e})'
    if not target:
        return None, f'"{pointer}" is empty (interrupted write)'
    if '://' in target:
        return target, None
    if not osp.isfile(target):
        return None, f'"{pointer}" names "{target}", which does not exist'
    return target, None


def resume_candidates(work_dir: str, filename_tmpls: Sequence[str],
                      extra_dirs: Sequence[str] = ()
                      ) -> Tuple[List[str], List[str]]:
    """Checkpoints to try for an automatic resume, in order, and notes.

    The file named by ``last_checkpoint`` comes first (the user may have
    pointed it at an older file on purpose); then every file whose name
    matches a template, in the work dir, the pointer's folder and
    ``extra_dirs``, highest step first. Temporary files of interrupted
    atomic writes never match.
    """
    first, problem = read_pointer(work_dir)
    notes = [problem] if problem else []
    regex = name_regex(filename_tmpls)
    folders = [work_dir, *extra_dirs]
    if first and '://' not in first:
        folders.append(osp.dirname(first))
    found = {}
    for folder in folders:
        if not osp.isdir(folder):
            continue
        for name in os.listdir(folder):
            step = _step(regex, name)
            path = osp.abspath(osp.join(folder, name))
            if step is None or is_temp_file(name) or not osp.isfile(path):
                continue
            found[path] = (step, osp.getmtime(path))
    ordered = sorted(found, key=lambda p: found[p], reverse=True)
    if first:
        key = first if '://' in first else osp.abspath(first)
        ordered = [first] + [p for p in ordered if p != key]
    return ordered, notes


def other_checkpoints(work_dir: str) -> List[str]:
    """``.pth`` files of ``work_dir`` (e.g. ``best_*``), by name; an automatic
    resume never starts over next to them."""
    if not osp.isdir(work_dir):
        return []
    return sorted(name for name in os.listdir(work_dir)
                  if name.endswith('.pth') and not is_temp_file(name)
                  and osp.isfile(osp.join(work_dir, name)))
