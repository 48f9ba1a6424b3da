"""``HookRunnerCase``: mmengine's ``RunnerTestCase`` for skd_bnn_mm's hooks.

A hook test builds a real runner from a config and drives it (``train()``,
or the hook's methods on that runner). What this adds to
:class:`mmengine.testing.RunnerTestCase`:

- ``self.epoch_based_cfg`` / ``self.iter_based_cfg``: mmengine's (ToyModel,
  ToyDataset, 2 epochs / 12 iterations) with ``default_scope='mmpretrain'``
  (whose registries fall back to mmengine's for the toy types),
  ``log_level='WARNING'`` and ``env_cfg.dist_cfg.backend='gloo'``.
- ``self.tiny_skd_cfg(cfg, num_classes=10, classes=None, num_samples=16,
  batch_size=4)``: a copy of ``cfg`` that trains ``tiny_skd_step.TINY_SKD``
  (SKD-BNN ResNet-20 with 4/8/16 channels: 18 ``IRConv2d``, a soft-label
  bank) on :class:`ToyImageDataset`, in order, seed 0, no val/test loop.
- ``self.build_runner(cfg)``: ``self.runner_cls.from_cfg(cfg)`` under a
  unique experiment name. ``runner_cls`` is :class:`SafeRunner`, the
  configs' ``runner_type``; a subclass sets mmengine's ``Runner`` to test a
  hook under the plain runner. With ``cfg.launcher='pytorch'`` (after
  ``setup_dist_env()`` or in a spawned process with the env set) it first
  starts a gloo group and wraps the CPU model with ``device_ids=None``, as
  ``tools/common.py: apply_launcher`` does on machines without CUDA.
- ``self.setup_dist_env()``: mmengine's (one process, rank 0), on a free
  port; ``tearDown`` destroys the group and restores the variables (also
  the thread counts mmengine sets for distributed runs).
- ``get_hook(runner, hook_type)``: the one hook of that class the runner
  built from the config.
- ``worker_env(rank, world, port)``: the environment of one process
  spawned by ``torch.multiprocessing`` (one thread).
- ``start_gloo(cfg)``: that first step alone, for a runner built in a
  spawned process (``SafeRunner.from_cfg(cfg)`` after it).
- :class:`ToyImageDataset`: registered in mmengine's ``DATASETS`` during
  each test (a spawned process registers it with
  ``DATASETS.register_module(module=ToyImageDataset, force=True)``).
"""
import copy
import os
import socket

import torch
from mmengine.registry import DATASETS
from mmengine.runner import Runner
from mmengine.testing import RunnerTestCase
from mmpretrain.structures import DataSample
from torch.utils.data import Dataset

from skd_bnn_mm.engine.runner import SafeRunner
from tiny_skd_step import SGD, TINY_SKD

#: set by setup_dist_env and by mmengine's distributed setup; restored
_DIST_KEYS = ('MASTER_ADDR', 'MASTER_PORT', 'RANK', 'WORLD_SIZE',
              'LOCAL_RANK', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS')


class ToyImageDataset(Dataset):
    """``num_samples`` random uint8 ``3 x size x size`` images with labels
    ``i % num_classes`` (seed ``seed``), packed as mmpretrain's
    ``PackInputs`` does; ``classes`` (names) goes to ``metainfo``."""

    def __init__(self, num_samples=16, num_classes=10, size=8, seed=0,
                 classes=None):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (num_samples, 3, size, size),
                                    generator=g, dtype=torch.uint8)
        self.labels = [i % num_classes for i in range(num_samples)]
        self._metainfo = dict(classes=tuple(classes)) if classes else dict()

    @property
    def metainfo(self):
        return self._metainfo

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return dict(inputs=self.images[index],
                    data_samples=DataSample().set_gt_label(
                        self.labels[index]))


def get_hook(runner, hook_type):
    """The single hook of class ``hook_type`` registered in ``runner``."""
    hooks = [h for h in runner.hooks if isinstance(h, hook_type)]
    assert len(hooks) == 1, f'{len(hooks)} {hook_type.__name__} in runner'
    return hooks[0]


class HookRunnerCase(RunnerTestCase):
    """RunnerTestCase with our runner, scope and a tiny SKD-BNN config (see
    the module docstring)."""

    runner_cls = SafeRunner

    def setUp(self) -> None:
        super().setUp()
        DATASETS.register_module(module=ToyImageDataset, force=True)
        self._saved_env = {k: os.environ.get(k) for k in _DIST_KEYS}
        for cfg in (self.epoch_based_cfg, self.iter_based_cfg):
            cfg.default_scope = 'mmpretrain'
            cfg.log_level = 'WARNING'
            cfg.env_cfg = dict(dist_cfg=dict(backend='gloo'))

    def tearDown(self) -> None:
        super().tearDown()  # destroys a process group
        DATASETS.module_dict.pop('ToyImageDataset', None)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def build_runner(self, cfg) -> Runner:
        cfg = copy.deepcopy(cfg)
        cfg.experiment_name = self.experiment_name
        if cfg.get('launcher', 'none') != 'none':
            start_gloo(cfg)
        return self.runner_cls.from_cfg(cfg)

    def setup_dist_env(self) -> None:
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            self.dist_cfg['MASTER_PORT'] = s.getsockname()[1] - 1
        super().setup_dist_env()  # takes MASTER_PORT + 1

    @staticmethod
    def tiny_skd_cfg(cfg, num_classes=10, classes=None, num_samples=16,
                     batch_size=4):
        cfg = copy.deepcopy(cfg)
        model = copy.deepcopy(TINY_SKD)
        model['data_preprocessor']['num_classes'] = num_classes
        model['head']['num_classes'] = num_classes
        cfg.model = model
        cfg.optim_wrapper = dict(copy.deepcopy(SGD))
        cfg.train_dataloader.dataset = dict(
            type='ToyImageDataset', num_samples=num_samples,
            num_classes=num_classes, classes=classes)
        cfg.train_dataloader.batch_size = batch_size
        if cfg.train_dataloader.sampler.type == 'DefaultSampler':
            cfg.train_dataloader.sampler.shuffle = False
        for key in ('val_dataloader', 'val_evaluator', 'val_cfg',
                    'test_dataloader', 'test_evaluator', 'test_cfg'):
            cfg[key] = None
        cfg.randomness = dict(seed=0)
        return cfg


def worker_env(rank: int, world: int, port: int) -> None:
    """Environment of process ``rank`` of ``world`` spawned by
    ``torch.multiprocessing`` for mmengine's pytorch launcher; one thread."""
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                      RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)


def start_gloo(cfg) -> None:
    """Start the gloo group from the environment (mmengine's pytorch
    launcher binds a CUDA device first) and wrap a CPU model in DDP without
    ``device_ids``; ``cfg.model_wrapper_cfg`` keeps its other arguments."""
    import torch.distributed as torch_dist
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend='gloo')
    wrapper = dict(cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
