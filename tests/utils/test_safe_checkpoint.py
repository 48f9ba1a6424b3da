"""Checkpoints load with weights_only=True and an explicit allow-list."""
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader, load_checkpoint

from skd_bnn_mm.utils import CheckpointError, load_checkpoint_file


class Payload:
    """Pickles into a call of os.system: what a hostile checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def mmengine_like(path):
    ckpt = dict(
        meta=dict(epoch=2, iter=14, seed=0, cfg=ConfigDict(a=1),
                  np_value=np.float64(0.5), dtype=np.dtype('float32')),
        state_dict={'w': torch.arange(4.)},
        message_hub=dict(log_scalars={'loss': HistoryBuffer([1., 2.], [1, 1])},
                         runtime_info={'epoch': 2}),
        optimizer={'state': {}, 'param_groups': [{'lr': 0.1}]})
    torch.save(ckpt, path)
    return ckpt


def test_mmengine_objects_load(tmp_path):
    path = tmp_path / 'ok.pth'
    ckpt = mmengine_like(path)
    loaded = CheckpointLoader.load_checkpoint(str(path))  # mmengine's path
    assert torch.equal(loaded['state_dict']['w'], ckpt['state_dict']['w'])
    assert isinstance(loaded['message_hub']['log_scalars']['loss'],
                      HistoryBuffer)
    assert loaded['meta']['np_value'] == 0.5


def test_hostile_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': Payload(str(marker))}, path)
    model = torch.nn.Linear(2, 2)
    for load in (lambda: load_checkpoint_file(str(path)),
                 lambda: CheckpointLoader.load_checkpoint(str(path)),
                 lambda: load_checkpoint(model, str(path))):
        with pytest.raises(CheckpointError, match='allow-list'):
            load()
    assert not marker.exists()


def test_plain_pickle_file_is_refused(tmp_path):
    marker = tmp_path / 'pwned2'
    path = tmp_path / 'evil.pkl'
    with open(path, 'wb') as f:
        pickle.dump(Payload(str(marker)), f)
    with pytest.raises(CheckpointError):
        load_checkpoint_file(str(path))
    assert not marker.exists()


def test_empty_truncated_missing(tmp_path):
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(CheckpointError, match='empty'):
        load_checkpoint_file(str(empty))
    good = tmp_path / 'good.pth'
    mmengine_like(good)
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match='truncated or corrupt'):
        load_checkpoint_file(str(cut))
    with pytest.raises(CheckpointError, match='does not exist'):
        load_checkpoint_file(str(tmp_path / 'nope.pth'))
