"""FiniteLossHook on a real runner: the first NaN or exploding loss part
stops training with its name, epoch and iteration, before anything is saved
after it."""
import copy
import math
import os
import os.path as osp

import pytest
from hook_runner_case import HookRunnerCase
from mmengine.registry import MODELS
from mmengine.testing.runner_test_case import ToyModel

from skd_bnn_mm.engine.hooks import FiniteLossHook
from skd_bnn_mm.engine.hooks.finite_loss_hook import CAUSES, GENERIC


class BadLossToyModel(ToyModel):
    """Logs ``loss_cls`` and ``loss_feat`` (or, with ``PARTS=False``, one
    ``loss``); the last part is multiplied by ``BAD[1]`` at the ``BAD[0]``-th
    training forward (1-based)."""

    BAD = (None, 1.0)
    PARTS = True

    def __init__(self, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.calls = 0

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = super().forward(inputs, data_samples, mode)
        if mode != 'loss':
            return out
        self.calls += 1
        at, factor = self.BAD
        scale = factor if self.calls == at else 1.0
        if not self.PARTS:
            return dict(loss=out['loss'].abs() * scale)
        return dict(loss_cls=out['loss'],
                    loss_feat=out['loss'].abs() * 1e-3 * scale)


class TestFiniteLossHook(HookRunnerCase):

    def setUp(self):
        super().setUp()
        MODELS.register_module(module=BadLossToyModel, force=True)
        cfg = copy.deepcopy(self.epoch_based_cfg)
        cfg.model = dict(type='BadLossToyModel')
        cfg.train_cfg.val_interval = 10  # no validation
        # a checkpoint after every iteration (4 per epoch)
        cfg.default_hooks.checkpoint = dict(
            type='CheckpointHook', by_epoch=False, interval=1)
        cfg.default_hooks.finite_loss = dict(type='FiniteLossHook')
        self.cfg = cfg

    def tearDown(self):
        MODELS.module_dict.pop('BadLossToyModel', None)
        BadLossToyModel.BAD, BadLossToyModel.PARTS = (None, 1.0), True
        super().tearDown()

    def _saved(self):
        return sorted(n for n in os.listdir(self.temp_dir.name)
                      if n.endswith('.pth'))

    def test_nan_part_stops_before_the_next_checkpoint(self):
        BadLossToyModel.BAD = (6, math.nan)  # epoch 2, its 2nd iteration
        runner = self.build_runner(self.cfg)
        with pytest.raises(FloatingPointError) as err:
            runner.train()
        msg = str(err.value)
        # the part is named, not the total it made NaN too
        assert msg.startswith('loss_feat is nan at epoch 2, iteration 6; '
                              'training stopped.')
        assert CAUSES['loss_feat'] in msg and GENERIC in msg
        assert 'default_hooks.finite_loss.max_loss' in msg
        assert self._saved() == [f'iter_{i}.pth' for i in range(1, 6)]
        with open(osp.join(self.temp_dir.name, 'last_checkpoint')) as f:
            assert f.read().strip().endswith('iter_5.pth')

    def test_exploding_loss_and_max_loss(self):
        BadLossToyModel.BAD = (3, 1e12)
        runner = self.build_runner(self.cfg)
        with pytest.raises(FloatingPointError) as err:
            runner.train()
        value = runner.message_hub.get_scalar('train/loss_feat').current()
        assert abs(value) > 1e5
        assert str(err.value).startswith(
            f'loss_feat is {value:.4g}, above max_loss=100000 (exploding) '
            'at epoch 1, iteration 3;')
        assert self._saved() == ['iter_1.pth', 'iter_2.pth']
        # max_loss=inf checks finiteness only: the same run completes
        self.clear_work_dir()
        cfg = copy.deepcopy(self.cfg)
        cfg.default_hooks.finite_loss.max_loss = math.inf
        runner = self.build_runner(cfg)
        runner.train()
        assert runner.iter == 8 and len(self._saved()) == 8

    def test_a_single_loss_is_named_loss(self):
        BadLossToyModel.BAD, BadLossToyModel.PARTS = (2, math.inf), False
        runner = self.build_runner(self.cfg)
        with pytest.raises(FloatingPointError) as err:
            runner.train()
        assert str(err.value).startswith(
            'loss is inf at epoch 1, iteration 2;')
        assert CAUSES['loss'] in str(err.value)
        assert self._saved() == ['iter_1.pth']

    def test_a_second_instance_does_nothing(self):
        BadLossToyModel.BAD = (3, 1e12)
        cfg = copy.deepcopy(self.cfg)
        cfg.default_hooks.finite_loss.max_loss = math.inf
        cfg.custom_hooks = [dict(type='FiniteLossHook', max_loss=1.0)]
        runner = self.build_runner(cfg)
        hooks = [h for h in runner.hooks if isinstance(h, FiniteLossHook)]
        assert [h.max_loss for h in hooks] == [math.inf, 1.0]
        runner.train()  # the first (max_loss=inf) decides
        assert runner.iter == 8
        assert [h._active for h in hooks] == [True, False]

    def test_max_loss_must_be_positive(self):
        for bad in (0, -1.0, '1e5', None):
            with pytest.raises(ValueError, match='max_loss must be a '
                               'positive number'):
                FiniteLossHook(max_loss=bad)
        assert FiniteLossHook(max_loss=7).max_loss == 7.0
        assert FiniteLossHook(math.inf).max_loss == math.inf
