"""Read SKD-BNN's soft-label bank from a checkpoint, a JSON dump or a CSV."""
import csv
import json
import os.path as osp
from typing import List, Optional, Tuple

import numpy as np

from ..utils.checkpoint import load_checkpoint_file

#: state-dict name of the bank buffer inside ``SKDImageClassifier``
BANK_SUFFIX = 'soft_label_bank.bank'


def _from_checkpoint(path: str, key: Optional[str]):
    ckpt = load_checkpoint_file(path, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else {}
    if key is None:
        keys = [k for k in state if k.endswith(BANK_SUFFIX)]
        if not keys:
            raise KeyError(
                f'{path} holds no soft-label bank (no state_dict key ending '
                f'in "{BANK_SUFFIX}"): was it trained with '
                'SKDImageClassifier and the label loss on?')
        if len(keys) > 1:
            raise KeyError(f'{path} holds several banks {keys}; choose one '
                           'with --key')
        key = keys[0]
    if key not in state:
        raise KeyError(f'{path} has no key {key!r}')
    bank = state[key].float().numpy()
    counts_key = key[:-len('bank')] + 'last_counts'
    counts = state[counts_key].numpy() if counts_key in state else None
    classes = None
    meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    dataset_meta = meta.get('dataset_meta') if isinstance(meta, dict) else None
    if isinstance(dataset_meta, dict) and dataset_meta.get('classes'):
        classes = list(dataset_meta['classes'])
    return bank, classes, counts


def _from_json(path: str):
    with open(path) as f:
        record = json.load(f)
    bank = record.get('bank') if isinstance(record, dict) else record
    classes = record.get('classes') if isinstance(record, dict) else None
    if isinstance(bank, dict):
        classes = classes or list(bank)
        bank = [bank[c] for c in classes]
    counts = record.get('correct_counts') if isinstance(record, dict) \
        else None
    return (np.asarray(bank, dtype=np.float64), classes,
            None if counts is None else np.asarray(counts))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _from_csv(path: str):
    with open(path, newline='') as f:
        rows = [r for r in csv.reader(f) if r]
    if not rows:
        raise ValueError(f'{path} is empty')
    header = None
    if not all(_is_number(c) for c in rows[0] if c):
        header, rows = [c for c in rows[0] if c], rows[1:]
    row_names = None
    if rows and not _is_number(rows[0][0]):
        row_names = [r[0] for r in rows]
        rows = [r[1:] for r in rows]
    classes = row_names or header
    return np.asarray(rows, dtype=np.float64), classes, None


def load_soft_label_bank(path: str, key: Optional[str] = None
                         ) -> Tuple[np.ndarray, Optional[List[str]],
                                    Optional[np.ndarray]]:
    """``(bank [C, C], class names or None, correct counts or None)``.

    ``path`` is a training checkpoint (read with the safe loader; the bank is
    the buffer ``*soft_label_bank.bank``, or ``key``), a JSON file written by
    ``SoftLabelBankHook`` (``{"classes", "correct_counts", "bank": {class:
    row}}``, or a bare list of rows) or a CSV of rows (optional header row
    and first column of class names).
    """
    ext = osp.splitext(path)[1].lower()
    if ext == '.json':
        bank, classes, counts = _from_json(path)
    elif ext == '.csv':
        bank, classes, counts = _from_csv(path)
    else:
        bank, classes, counts = _from_checkpoint(path, key)
    if bank.ndim != 2 or bank.shape[0] != bank.shape[1]:
        raise ValueError(f'{path}: the bank must be square [C, C], got '
                         f'shape {bank.shape}')
    if classes is not None and len(classes) != bank.shape[0]:
        classes = None
    return bank, classes, counts
