"""EDEHook and its schedule, on a real runner."""
import math

import pytest
import torch
from hook_runner_case import HookRunnerCase, get_hook
from mmengine.model import BaseModel, MMDistributedDataParallel
from mmengine.registry import MODELS
from mmpretrain.registry import HOOKS

from skd_bnn_mm.engine.hooks import EDEHook, ede_schedule
from skd_bnn_mm.models.layers import IRConv2d


def _expected(epoch, max_epochs, t_min=1e-3, t_max=10.0):
    t = 10**(math.log10(t_min) +
             (math.log10(t_max) - math.log10(t_min)) * epoch / max_epochs)
    return max(1 / t, 1.0), t


def _state(model):
    return [(m.ede_k.item(), m.ede_t.item()) for m in model.modules()
            if isinstance(m, IRConv2d)]


@pytest.mark.parametrize('epoch', [0, 5, 9])
def test_schedule_formula(epoch):
    k, t = ede_schedule(epoch, 10)
    assert (k, t) == pytest.approx(_expected(epoch, 10), rel=1e-12)


def test_schedule_landmarks():
    assert ede_schedule(0, 10, 0.1, 10) == pytest.approx((10.0, 0.1))
    # halfway in log space: geometric mean; k = 1/t while t < 1
    k, t = ede_schedule(40, 80, 1e-3, 10)
    assert (k, t) == pytest.approx((10.0, 0.1))
    k, t = ede_schedule(79, 80, 1e-3, 10)
    assert k == 1.0 and t == pytest.approx(10**(-3 + 4 * 79 / 80))


def test_invalid_bounds():
    for t_min, t_max in [(0, 10), (-1, 10), (5, 5), (10, 1)]:
        with pytest.raises(ValueError, match='t_min'):
            EDEHook(t_min, t_max)


class EDEProbe(BaseModel):
    """One IRConv2d; records the ``t`` every training forward runs with."""

    def __init__(self):
        super().__init__()
        self.conv = IRConv2d(3, 2, 3, padding=1)
        self.seen = []

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if mode == 'loss':
            self.seen.append(self.conv.ede_t.item())
        out = self.conv(torch.stack(inputs).float()).mean()
        return dict(loss=out) if mode == 'loss' else [out]


class TestEDEHook(HookRunnerCase):

    def setUp(self):
        super().setUp()
        MODELS.register_module(module=EDEProbe, force=True)

    def tearDown(self):
        MODELS.module_dict.pop('EDEProbe', None)
        super().tearDown()

    def _runner(self, max_epochs=10, t_min=1e-3, t_max=10.0, dist=False):
        """Tiny SKD-BNN (18 IRConv2d) with the hook from the config."""
        cfg = self.tiny_skd_cfg(self.epoch_based_cfg)
        cfg.train_cfg.max_epochs = max_epochs
        cfg.custom_hooks = [dict(type='EDEHook', t_min=t_min, t_max=t_max)]
        if dist:
            self.setup_dist_env()
            cfg.launcher = 'pytorch'
        runner = self.build_runner(cfg)
        model = runner.model.module if dist else runner.model
        self.assertEqual(len(_state(model)), 18)
        return runner, get_hook(runner, EDEHook), model

    @staticmethod
    def _set_epoch(runner, epoch):
        runner.train_loop._epoch = epoch

    def test_hook_sets_every_irconv(self):
        runner, hook, model = self._runner(t_min=0.1, t_max=10)
        for epoch in (0, 5, 9):
            with self.subTest(epoch=epoch):
                self._set_epoch(runner, epoch)
                with self.assertLogs(runner.logger, 'INFO') as logs:
                    hook.before_train_epoch(runner)
                k, t = _expected(epoch, 10, 0.1, 10)
                assert _state(model) == [pytest.approx((k, t), rel=1e-6)] * 18
                assert runner.message_hub.get_scalar(
                    'train/ede_t').current() == pytest.approx(t)
                assert runner.message_hub.get_scalar(
                    'train/ede_k').current() == pytest.approx(k)
                assert len(logs.records) == 1
                assert f'{t:.6g}' in logs.records[0].getMessage()

    def test_resume_and_idempotence(self):
        runner, hook, model = self._runner(max_epochs=20)
        with self.assertLogs(runner.logger, 'INFO') as logs:
            hook.before_train(runner)
            hook.before_train_epoch(runner)  # same epoch: logged once
        assert len(logs.records) == 1
        # a resumed run: the checkpoint (and later the runner) say epoch 5
        for m in model.modules():
            if isinstance(m, IRConv2d):
                m.set_ede(123.0, 4.0)  # stale values restored from a checkpoint
        hook.after_load_checkpoint(runner, {'meta': {'epoch': 5}})
        expected = [pytest.approx(_expected(5, 20), rel=1e-6)] * 18
        assert _state(model) == expected
        self._set_epoch(runner, 5)
        hook.before_train(runner)
        hook.before_train_epoch(runner)
        hook.before_train_epoch(runner)
        assert _state(model) == expected

    def test_wrapped_model_is_unwrapped(self):
        runner, hook, model = self._runner(dist=True)
        assert isinstance(runner.model, MMDistributedDataParallel)
        self._set_epoch(runner, 3)
        hook.before_train_epoch(runner)
        assert _state(model) == [pytest.approx(_expected(3, 10), rel=1e-6)
                                 ] * 18

    def test_no_irconv_warns_once(self):
        cfg = self.epoch_based_cfg  # mmengine's ToyModel: Linear layers only
        cfg.train_cfg.max_epochs = 3
        cfg.custom_hooks = [dict(type='EDEHook')]
        runner = self.build_runner(cfg)
        with self.assertLogs(runner.logger, 'WARNING') as logs:
            runner.train()
        assert runner.epoch == 3
        warnings = [r.getMessage() for r in logs.records
                    if r.getMessage().startswith('EDEHook')]
        assert len(warnings) == 1 and 'IRConv2d' in warnings[0]

    def test_registered_and_runs_in_a_runner(self):
        """Real epoch loop: each epoch trains with that epoch's k, t; a
        resumed run continues the schedule."""
        assert HOOKS.get('EDEHook') is EDEHook
        cfg = self.epoch_based_cfg
        cfg.model = dict(type='EDEProbe')
        cfg.train_dataloader.dataset = dict(type='ToyImageDataset',
                                            num_samples=2, size=4)
        cfg.train_dataloader.batch_size = 2
        cfg.optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01))
        cfg.train_cfg = dict(by_epoch=True, max_epochs=4)
        for key in ('val_dataloader', 'val_evaluator', 'val_cfg'):
            cfg[key] = None
        cfg.custom_hooks = [dict(type='EDEHook', t_min=0.01, t_max=1.0)]
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)

        runner = self.build_runner(cfg)
        runner.train()
        assert runner.model.seen == pytest.approx(
            [_expected(e, 4, 0.01, 1.0)[1] for e in range(4)], rel=1e-6)

        cfg.load_from = f'{self.temp_dir.name}/epoch_2.pth'
        cfg.resume = True
        runner = self.build_runner(cfg)
        runner.train()
        assert runner.model.seen == pytest.approx(
            [_expected(e, 4, 0.01, 1.0)[1] for e in range(2, 4)], rel=1e-6)
