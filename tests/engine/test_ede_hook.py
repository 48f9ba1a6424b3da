import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmpretrain.registry import HOOKS

from skd_bnn_mm.engine.hooks import EDEHook, ede_schedule
from skd_bnn_mm.models.layers import IRConv2d


def _expected(epoch, max_epochs, t_min=1e-3, t_max=10.0):
    t = 10**(math.log10(t_min) +
             (math.log10(t_max) - math.log10(t_min)) * epoch / max_epochs)
    return max(1 / t, 1.0), t


class _Logger:

    def __init__(self):
        self.infos, self.warnings = [], []

    def info(self, msg):
        self.infos.append(msg)

    def warning(self, msg):
        self.warnings.append(msg)


def _model():
    return nn.Sequential(nn.Conv2d(3, 4, 3), IRConv2d(4, 4, 3),
                         nn.Sequential(IRConv2d(4, 2, 3)))


def _runner(model, epoch=0, max_epochs=10):
    return SimpleNamespace(model=model, epoch=epoch, max_epochs=max_epochs,
                           logger=_Logger(),
                           message_hub=MessageHub.get_instance('ede_test'))


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


@pytest.mark.parametrize('epoch', [0, 5, 9])
def test_hook_sets_every_irconv(epoch):
    model = _model()
    hook = EDEHook(t_min=0.1, t_max=10)
    runner = _runner(model, epoch=epoch)
    hook.before_train_epoch(runner)
    k, t = _expected(epoch, 10, 0.1, 10)
    assert _state(model) == [pytest.approx((k, t), rel=1e-6)] * 2
    assert runner.message_hub.get_scalar('train/ede_t').current() == \
        pytest.approx(t)
    assert len(runner.logger.infos) == 1 and f'{t:.6g}' in \
        runner.logger.infos[0]


def test_resume_and_idempotence():
    model = _model()
    hook = EDEHook()
    runner = _runner(model, epoch=0, max_epochs=20)
    hook.before_train(runner)
    hook.before_train_epoch(runner)  # same epoch: same state, logged once
    assert len(runner.logger.infos) == 1
    # a resumed run: the checkpoint (and later the runner) say epoch 5
    for m in model.modules():
        if isinstance(m, IRConv2d):
            m.set_ede(123.0, 4.0)  # stale values restored from a checkpoint
    hook.after_load_checkpoint(runner, {'meta': {'epoch': 5}})
    expected = [pytest.approx(_expected(5, 20), rel=1e-6)] * 2
    assert _state(model) == expected
    runner.epoch = 5
    hook.before_train(runner)
    hook.before_train_epoch(runner)
    hook.before_train_epoch(runner)
    assert _state(model) == expected


def test_wrapped_model_is_unwrapped():
    model = _model()
    runner = _runner(nn.DataParallel(model), epoch=3)
    EDEHook().before_train_epoch(runner)
    assert _state(model) == [pytest.approx(_expected(3, 10), rel=1e-6)] * 2


def test_no_irconv_warns_once():
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    hook = EDEHook()
    runner = _runner(model)
    for epoch in range(3):
        runner.epoch = epoch
        hook.before_train_epoch(runner)
    assert len(runner.logger.warnings) == 1
    assert 'IRConv2d' in runner.logger.warnings[0]


def test_registered_and_runs_in_a_runner(tmp_path):
    """Real epoch loop: each epoch trains with that epoch's k, t; a resumed
    run continues the schedule."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Tiny(BaseModel):

        def __init__(self):
            super().__init__()
            self.conv = IRConv2d(2, 2, 3, padding=1)
            self.seen = []

        def forward(self, x, mode='loss'):
            if mode == 'loss':
                self.seen.append(self.conv.ede_t.item())
            out = self.conv(x).mean()
            return dict(loss=out) if mode == 'loss' else [out]

    data = [dict(x=torch.randn(2, 4, 4)) for _ in range(2)]
    base = dict(
        train_dataloader=dict(
            dataset=data, batch_size=2,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        custom_hooks=[dict(type='EDEHook', t_min=0.01, t_max=1.0)],
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1),
            logger=dict(type='LoggerHook', interval=1)),
        default_scope='mmpretrain', log_level='WARNING')
    assert HOOKS.get('EDEHook') is EDEHook

    model = Tiny()
    Runner(model=model, work_dir=str(tmp_path), experiment_name='a',
           train_cfg=dict(by_epoch=True, max_epochs=4), **base).train()
    assert model.seen == pytest.approx(
        [_expected(e, 4, 0.01, 1.0)[1] for e in range(4)], rel=1e-6)

    model = Tiny()
    Runner(model=model, work_dir=str(tmp_path), experiment_name='b',
           train_cfg=dict(by_epoch=True, max_epochs=4),
           load_from=str(tmp_path / 'epoch_2.pth'), resume=True,
           **base).train()
    assert model.seen == pytest.approx(
        [_expected(e, 4, 0.01, 1.0)[1] for e in range(2, 4)], rel=1e-6)
