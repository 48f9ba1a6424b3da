"""Read mmengine's ``vis_data/scalars.json`` training logs.

mmengine's ``LocalVisBackend`` writes one JSON object per line: training
records (they have ``lr`` or a ``loss*`` key, plus ``epoch``, ``iter`` and
``step`` = iteration) and validation/test records (metrics such as
``accuracy/top1`` with ``step`` = epoch for epoch-based training). A resumed
run may append records that repeat earlier steps; the later value wins.
"""
import glob
import json
import os.path as osp
from typing import Dict, List, Tuple

Series = Dict[str, List[Tuple[float, float]]]

#: keys that describe a record rather than a curve
META_KEYS = ('epoch', 'iter', 'step', 'data_time', 'time', 'memory')


def find_scalars(path: str) -> str:
    """``path`` itself if it is a file, else the newest
    ``*/vis_data/scalars.json`` under the work dir ``path``."""
    if osp.isfile(path):
        return path
    if osp.isdir(path):
        found = sorted(glob.glob(osp.join(path, '*', 'vis_data',
                                          'scalars.json')))
        found += sorted(glob.glob(osp.join(path, 'vis_data',
                                           'scalars.json')))
        if found:
            return max(found, key=osp.getmtime)
    raise FileNotFoundError(
        f'No scalars.json at "{path}": give a vis_data/scalars.json file or '
        'a work dir of tools/train.py (it holds TIMESTAMP/vis_data/'
        'scalars.json).')


def _is_train(record: dict) -> bool:
    return 'lr' in record or any(k.startswith('loss') for k in record)


def load_scalars(path: str) -> Dict[str, Series]:
    """Parse a scalars.json (or a work dir) into curves.

    Returns ``{'train': {key: [(iteration, value), ...]}, 'val': {key:
    [(epoch or step, value), ...]}}`` sorted by x, one value per x.
    """
    path = find_scalars(path)
    out: Dict[str, Dict[str, Dict[float, float]]] = {'train': {}, 'val': {}}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise ValueError(f'{path}:{lineno}: not a JSON line ({e})')
            part = 'train' if _is_train(record) else 'val'
            x = record.get('iter', record.get('step')) if part == 'train' \
                else record.get('step', record.get('epoch'))
            if x is None:
                continue
            for key, value in record.items():
                if key in META_KEYS or not isinstance(value, (int, float)):
                    continue
                out[part].setdefault(key, {})[float(x)] = float(value)
    return {part: {k: sorted(v.items()) for k, v in series.items()}
            for part, series in out.items()}
