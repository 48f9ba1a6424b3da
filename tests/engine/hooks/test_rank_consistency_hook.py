"""RankConsistencyHook on two gloo processes, each training a real runner:
BN statistics are averaged, per-process buffers are ignored, and a diverged
parameter stops training with its name (on every process, so none is left
waiting) before that epoch's checkpoint is written."""
import copy
import logging
import os
import os.path as osp
import socket

import torch
import torch.multiprocessing as mp
import torch.nn as nn
from hook_runner_case import HookRunnerCase, get_hook, worker_env
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel, is_model_wrapper
from mmengine.registry import DATASETS, HOOKS, MODELS
from mmengine.testing.runner_test_case import ToyDataset

from skd_bnn_mm.utils import load_checkpoint_file

WORLD = 2


class BNToyModel(BaseModel):
    """Conv + BN (momentum 0: training leaves the running statistics as
    set) and a buffer declared per process."""

    _ddp_params_and_buffers_to_ignore = ['scratch']

    def __init__(self, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 3, 1)
        self.bn = nn.BatchNorm2d(3, momentum=0.0)
        self.register_buffer('scratch', torch.zeros(2))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs)[:, :, None, None]
        out = self.bn(self.conv(x)).flatten(1).sum(1)
        if mode == 'loss':
            return dict(loss=(out - torch.stack(data_samples)).square().mean())
        return out


def _net(runner):
    return runner.model.module if is_model_wrapper(runner.model) \
        else runner.model


class PerRankStateHook(Hook):
    """Gives each process its own BN statistics and ``scratch`` before
    training (after DDP's broadcast from rank 0), makes ``conv.bias`` of
    rank 1 differ after the training of epoch 2, and records what the
    processes hold after every epoch's checks and what was logged."""

    priority = 'NORMAL'  # after_train_epoch: before RankConsistencyHook

    def __init__(self):
        self.rank = int(os.environ['RANK'])
        self.infos = []

    def before_run(self, runner):
        infos = self.infos

        class Record(logging.Handler):
            def emit(self, record):
                infos.append(record.getMessage())

        runner.logger.addHandler(Record(logging.INFO))

    def before_train(self, runner):
        net = _net(runner)
        net.bn.running_mean.fill_(float(self.rank))  # 0 and 1
        net.bn.running_var.fill_(1.0 + 2 * self.rank)  # 1 and 3
        net.scratch.fill_(float(self.rank))  # per process by declaration

    def after_train_epoch(self, runner):
        if runner.epoch == 1:
            with torch.no_grad():
                _net(runner).conv.bias[1] += 1e-6 * self.rank


class StateRecordHook(Hook):
    priority = 'LOWEST'  # after RankConsistencyHook and the checkpoint

    def __init__(self):
        self.after_epoch = []

    def after_train_epoch(self, runner):
        net = _net(runner)
        self.after_epoch.append(dict(
            mean=net.bn.running_mean.clone(), var=net.bn.running_var.clone(),
            scratch=net.scratch.clone()))


def _worker(rank, port, cfg, out_dir):
    worker_env(rank, WORLD, port)
    MODELS.register_module(module=BNToyModel, force=True)
    DATASETS.register_module(module=ToyDataset, force=True)
    for hook in (PerRankStateHook, StateRecordHook):
        HOOKS.register_module(module=hook, force=True)
    runner = TestRankConsistencyHook('test_sync_and_divergence_check') \
        .build_runner(Config(cfg))
    assert is_model_wrapper(runner.model) and runner.distributed
    try:
        runner.train()
        error = None
    except RuntimeError as e:
        error = str(e)
    torch.save(dict(after_epoch=get_hook(runner, StateRecordHook).after_epoch,
                    infos=get_hook(runner, PerRankStateHook).infos,
                    error=error, epoch=runner.epoch),
               osp.join(out_dir, f'rank{rank}.pt'))
    torch.distributed.destroy_process_group()
    # leave without interpreter finalisation, where gloo's threads can
    # still abort a finished process (as tools/common.py: run_tool)
    os._exit(0)


class TestRankConsistencyHook(HookRunnerCase):

    def test_sync_and_divergence_check(self):
        cfg = copy.deepcopy(self.epoch_based_cfg)  # 2 epochs
        cfg.model = dict(type='BNToyModel')
        cfg.launcher = 'pytorch'
        for key in ('val_dataloader', 'val_evaluator', 'val_cfg',
                    'test_dataloader', 'test_evaluator', 'test_cfg'):
            cfg[key] = None
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
        cfg.default_hooks.rank_consistency = dict(type='RankConsistencyHook')
        cfg.custom_hooks = [dict(type='PerRankStateHook'),
                            dict(type='StateRecordHook')]
        out = osp.join(self.temp_dir.name, 'results')
        os.makedirs(out)
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            port = s.getsockname()[1]
        mp.spawn(_worker, args=(port, cfg.to_dict(), out), nprocs=WORLD,
                 join=True)
        results = [torch.load(osp.join(out, f'rank{r}.pt'),
                              weights_only=True) for r in range(WORLD)]
        for rank, r in enumerate(results):
            # epoch 1: averaged statistics, the per-process buffer kept
            first = r['after_epoch'][0]
            assert torch.equal(first['mean'], torch.full((3, ), 0.5))
            assert torch.equal(first['var'], torch.full((3, ), 2.0))
            assert torch.equal(first['scratch'], torch.full((2, ),
                                                            float(rank)))
            assert any('identical on 2 processes after epoch 1' in i
                       for i in r['infos'])
            # epoch 2: rank 1's conv.bias differs -> stop, on every process
            assert len(r['after_epoch']) == 1 and r['epoch'] == 1
            assert r['error'] is not None
            assert 'conv.bias' in r['error'] and 'After epoch 2' in r['error']
            assert 'conv.weight' not in r['error'] and 'scratch' not in \
                r['error']
            assert 'before this epoch\'s checkpoint' in r['error']
        # the checkpoint of epoch 1 holds the averaged statistics; none of
        # epoch 2 was written
        work = self.temp_dir.name
        assert sorted(n for n in os.listdir(work) if n.endswith('.pth')) \
            == ['epoch_1.pth']
        saved = load_checkpoint_file(osp.join(work, 'epoch_1.pth'),
                                     map_location='cpu')['state_dict']
        assert torch.equal(saved['bn.running_mean'], torch.full((3, ), 0.5))
        assert torch.equal(saved['bn.running_var'], torch.full((3, ), 2.0))
