"""tools/common.py: process-group teardown at the end of train/test."""
import os.path as osp
import sys

import torch.distributed as dist

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
from tools.common import shutdown_distributed  # noqa: E402


def test_shutdown_destroys_an_initialised_group(tmp_path):
    store = dist.FileStore(str(tmp_path / 'store'), 1)
    dist.init_process_group('gloo', store=store, rank=0, world_size=1)
    assert dist.is_initialized()
    assert shutdown_distributed() is True
    assert not dist.is_initialized()
    assert shutdown_distributed() is False  # no group: nothing to do
