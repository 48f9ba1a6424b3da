"""Process entry points for ``torch.multiprocessing.spawn`` on gloo.

(A module of their own: spawned processes import the function by name.)
"""
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))  # the repository: tools.common


def _join_group(rank, world, port, threads=1):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                      RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), CIFAR10_VERIFY_MD5='False',
                      OMP_NUM_THREADS=str(threads))
    import torch
    torch.set_num_threads(threads)


def train(rank, world, port, work_dir, data_root, overrides):
    """One process of a distributed in-process run (tools/train.py's path:
    ``apply_launcher`` starts gloo on a machine without CUDA)."""
    _join_group(rank, world, port)
    import reliability_hooks  # noqa: F401  (test hooks)
    from mmpretrain.registry import RUNNERS
    from reliability_utils import build_cfg

    from tools.common import apply_launcher, shutdown_distributed
    cfg = build_cfg(work_dir, data_root, **overrides)
    cfg.launcher = 'pytorch'
    apply_launcher(cfg)
    try:
        RUNNERS.build(cfg).train()
    finally:
        shutdown_distributed()


def stalled_peer(rank, world, port, timeout, out):
    """Rank 1 stops answering; rank 0's collective must give up after
    ``env_cfg.dist_cfg.timeout`` seconds and write what it saw."""
    _join_group(rank, world, port)
    from mmengine.config import ConfigDict

    from tools.common import apply_launcher
    cfg = ConfigDict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(
        backend='nccl', timeout=timeout)))
    apply_launcher(cfg)
    import torch
    import torch.distributed as torch_dist
    if rank == 1:
        time.sleep(120)  # stopped, not dead: the socket stays open
        return
    start = time.monotonic()
    try:
        torch_dist.all_reduce(torch.ones(4))
        message = 'no error'
    except RuntimeError as e:
        message = str(e)
    with open(out, 'w') as f:
        f.write(f'{time.monotonic() - start:.1f}\n{message}')
    os._exit(0)
