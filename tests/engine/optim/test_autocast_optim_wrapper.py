"""AutocastOptimWrapper: fp16 with dynamic loss scaling on a CPU behaves as
mmengine's AmpOptimWrapper does on CUDA; bf16 without scaling, on a toy
model and on the SKD-BNN step."""
import copy
import functools
import logging

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub, MMLogger
from mmengine.optim import (AmpOptimWrapper, OptimWrapper,
                            build_optim_wrapper)
from mmengine.optim.optimizer import amp_optimizer_wrapper
from tiny_skd_step import SGD, random_batches, tiny_skd_model, train_steps

from skd_bnn_mm.engine.optim import AutocastOptimWrapper, amp_optim_wrapper_cfg
from skd_bnn_mm.models.layers import IRConv2d
from skd_bnn_mm.utils import load_checkpoint_file


@pytest.fixture
def mmengine_amp_on_cpu(monkeypatch):
    """mmengine's own AmpOptimWrapper, run on the CPU: its accelerator
    check passes and its GradScaler is torch.amp.GradScaler('cpu') (on CUDA
    it is torch.amp.GradScaler('cuda'), the same class)."""
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available',
                        lambda: True)
    monkeypatch.setattr(amp_optimizer_wrapper, 'GradScaler',
                        functools.partial(torch.amp.GradScaler, 'cpu'))


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))


def _sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                           weight_decay=1e-4)


def _losses(model, steps, overflow_at):
    """Deterministic losses; ``overflow_at`` steps give inf gradients once
    scaled (a finite loss times 1e36 exceeds float32 when multiplied by the
    scale)."""
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        x = torch.randn(8, 6, generator=g)
        loss = model(x).pow(2).mean()
        yield loss * 1e36 if step in overflow_at else loss


def _beside_plain(steps, **wrapper_args):
    """``steps`` updates through an AutocastOptimWrapper and, on a copy of
    the model, through a plain OptimWrapper; no overflow.

    Returns the wrapper, its model and the plain wrapper's model."""
    model, ref = _model(), _model()
    wrapper = AutocastOptimWrapper(optimizer=_sgd(model), **wrapper_args)
    plain = OptimWrapper(optimizer=_sgd(ref))
    for a, b in zip(_losses(model, steps, ()), _losses(ref, steps, ())):
        wrapper.update_params(a)
        plain.update_params(b)
    return wrapper, model, ref


def _state(model):
    return [p.detach().clone() for p in model.parameters()]


def test_fp16_defaults_are_amp_optim_wrappers(mmengine_amp_on_cpu):
    ours = AutocastOptimWrapper(optimizer=_sgd(_model()), dtype='float16')
    theirs = AmpOptimWrapper(optimizer=_sgd(_model()), dtype='float16')
    assert ours.loss_scaler.state_dict() == theirs.loss_scaler.state_dict()
    assert ours.loss_scaler.state_dict() == dict(
        scale=65536.0, growth_factor=2.0, backoff_factor=0.5,
        growth_interval=2000, _growth_tracker=0)
    assert ours.cast_dtype is torch.float16
    assert isinstance(ours.loss_scaler, torch.amp.GradScaler)


@pytest.mark.parametrize('loss_scale', ['dynamic', 1024.0,
                                        dict(init_scale=256.0,
                                             growth_interval=2)])
def test_fp16_steps_equal_mmengine_amp_optim_wrapper(mmengine_amp_on_cpu,
                                                     loss_scale):
    """Scale, skips and parameters after each of 9 steps (two overflowing)
    are those of mmengine's AmpOptimWrapper, bitwise."""
    ours_model, theirs_model = _model(), _model()
    ours = AutocastOptimWrapper(optimizer=_sgd(ours_model), dtype='float16',
                                loss_scale=loss_scale)
    theirs = AmpOptimWrapper(optimizer=_sgd(theirs_model), dtype='float16',
                             loss_scale=loss_scale)
    overflow = {2, 5}
    scales = []
    for step, (a, b) in enumerate(zip(_losses(ours_model, 9, overflow),
                                      _losses(theirs_model, 9, overflow))):
        before = _state(ours_model)
        ours.update_params(a)
        theirs.update_params(b)
        assert ours.loss_scaler.get_scale() == theirs.loss_scaler.get_scale()
        for p, q in zip(ours_model.parameters(), theirs_model.parameters()):
            assert torch.equal(p, q), step
        moved = any(not torch.equal(p, q) for p, q in
                    zip(before, ours_model.parameters()))
        assert moved == (step not in overflow), step  # skipped: unchanged
        scales.append(ours.loss_scaler.get_scale())
    assert ours.skipped_steps == 2
    assert ours.state_dict()['loss_scaler'] == \
        theirs.state_dict()['loss_scaler']
    if loss_scale == 'dynamic':  # halved twice, no growth in 9 steps
        assert scales == [65536.0] * 2 + [32768.0] * 3 + [16384.0] * 4
    elif isinstance(loss_scale, float):  # static: never changes
        assert scales == [1024.0] * 9
    else:  # doubled after every 2 finite steps, halved on overflow
        assert scales == [256.0, 512.0, 256.0, 256.0, 512.0, 256.0, 256.0,
                          512.0, 512.0]


def test_unscaled_gradients_give_the_float32_update():
    """Without overflow, scaling by 2^k and unscaling is exact: the step is
    bitwise the plain OptimWrapper's."""
    fp16, m16, m32 = _beside_plain(4, dtype='float16')
    for p, q in zip(m16.parameters(), m32.parameters()):
        assert torch.equal(p, q)
    assert fp16.skipped_steps == 0


def test_skipped_step_is_logged_and_counted():
    hub = MessageHub.get_instance('amp_skip_test')  # current: the wrapper's
    model = _model()
    wrapper = AutocastOptimWrapper(optimizer=_sgd(model), dtype='float16')
    logger = MMLogger.get_instance('amp_skip_test')
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        for loss in _losses(model, 3, {1}):
            wrapper.update_params(loss)
    finally:
        logger.removeHandler(handler)
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert 'step skipped, loss scale 65536 -> 32768' in \
        warnings[0].getMessage()
    assert hub.get_scalar('train/amp_scale').current() == 32768.0
    assert hub.get_scalar('train/amp_skipped_steps').current() == 1
    assert list(hub.get_scalar('train/amp_scale').data[0]) == [
        65536.0, 32768.0, 32768.0]


def test_scaler_state_round_trips_through_a_checkpoint_file(tmp_path):
    """Saved with the optimizer state, loaded with weights_only=True and the
    allow-list; the restored wrapper continues exactly as the original."""
    model = _model()
    wrapper = AutocastOptimWrapper(
        optimizer=_sgd(model), dtype='float16',
        loss_scale=dict(growth_interval=3))
    for loss in _losses(model, 5, {1}):
        wrapper.update_params(loss)
    path = tmp_path / 'ckpt.pth'
    torch.save(dict(optimizer=wrapper.state_dict(),
                    state_dict=model.state_dict()), path)
    saved = load_checkpoint_file(str(path))
    assert saved['optimizer']['loss_scaler'] == dict(
        scale=32768.0 * 2, growth_factor=2.0, backoff_factor=0.5,
        growth_interval=3, _growth_tracker=0)

    model2 = _model(seed=5)
    model2.load_state_dict(saved['state_dict'])
    restored = AutocastOptimWrapper(optimizer=_sgd(model2), dtype='float16')
    restored.load_state_dict(saved['optimizer'])
    assert restored.loss_scaler.state_dict() == \
        wrapper.loss_scaler.state_dict()
    for a, b in zip(_losses(model, 4, {2}), _losses(model2, 4, {2})):
        wrapper.update_params(a)
        restored.update_params(b)
        assert wrapper.loss_scaler.get_scale() == \
            restored.loss_scaler.get_scale()
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_checkpoints_of_both_wrappers_load_into_each_other(
        mmengine_amp_on_cpu):
    model = _model()
    ours = AutocastOptimWrapper(optimizer=_sgd(model), dtype='float16')
    for loss in _losses(model, 2, {0}):
        ours.update_params(loss)
    theirs = AmpOptimWrapper(optimizer=_sgd(_model()), dtype='float16')
    theirs.load_state_dict(ours.state_dict())
    assert theirs.loss_scaler.get_scale() == 32768.0
    back = AutocastOptimWrapper(optimizer=_sgd(_model()), dtype='float16')
    back.load_state_dict(theirs.state_dict())
    assert back.loss_scaler.get_scale() == 32768.0


def test_clip_grad_sees_unscaled_gradients():
    hub = MessageHub.get_instance('amp_clip_test')
    m16, m32 = _model(), _model()
    clip = dict(max_norm=0.05)
    fp16 = AutocastOptimWrapper(optimizer=_sgd(m16), dtype='float16',
                                clip_grad=clip)
    plain = OptimWrapper(optimizer=_sgd(m32), clip_grad=clip)
    norms = []
    for a, b in zip(_losses(m16, 3, ()), _losses(m32, 3, ())):
        fp16.update_params(a)
        norms.append(hub.get_scalar('train/grad_norm').current())
        plain.update_params(b)
        norms.append(hub.get_scalar('train/grad_norm').current())
    assert norms[0::2] == norms[1::2] and norms[0] > 0.05  # clipped
    for p, q in zip(m16.parameters(), m32.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('dtype,expected', [('float16', torch.float16),
                                            ('fp16', torch.float16),
                                            ('bfloat16', torch.bfloat16),
                                            (torch.bfloat16, torch.bfloat16)])
def test_optim_context_autocasts_to_dtype(dtype, expected):
    conv = nn.Conv2d(3, 4, 3)
    wrapper = AutocastOptimWrapper(
        optimizer=torch.optim.SGD(conv.parameters(), lr=0.1), dtype=dtype)
    with wrapper.optim_context(conv):
        y = conv(torch.randn(1, 3, 5, 5))
    assert y.dtype == expected
    assert (wrapper.loss_scaler is not None) == (expected is torch.float16)


def test_bf16_steps_are_plain_float32_steps():
    bf16, m16, m32 = _beside_plain(3)
    for p, q in zip(m16.parameters(), m32.parameters()):
        assert torch.equal(p, q)
    assert 'loss_scaler' not in bf16.state_dict()


def test_bad_arguments_say_what_is_allowed():
    opt = torch.optim.SGD(_model().parameters(), lr=0.1)
    with pytest.raises(ValueError, match='"bfloat16" or "float16"'):
        AutocastOptimWrapper(optimizer=opt, dtype='float32')
    with pytest.raises(TypeError, match='loss_scale must be'):
        AutocastOptimWrapper(optimizer=opt, dtype='float16',
                             loss_scale='static')


def test_bf16_skd_step_matches_manual_autocast_step():
    """The wrapper the tools pick for bf16 on a CPU: the SKD-BNN step runs
    its binary convs in bf16 and is exactly the step written out with
    torch.autocast."""
    model = tiny_skd_model()
    reference = copy.deepcopy(model)
    batch = random_batches(1)[0]
    dtypes = []
    handles = [m.register_forward_hook(
        lambda mod, args, out: dtypes.append(out.dtype))
        for m in model.modules() if isinstance(m, IRConv2d)]
    wrapper = build_optim_wrapper(
        model, amp_optim_wrapper_cfg(SGD, 'bf16', 'cpu'))
    assert isinstance(wrapper, AutocastOptimWrapper)
    log_vars = model.train_step(batch, wrapper)
    for h in handles:
        h.remove()
    # 18 student + 18 teacher binary convs, all in bf16
    assert len(dtypes) == 36 and set(dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert log_vars['loss_feat'].dtype == torch.float32  # float32 reductions

    # the same step written out with torch.autocast
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9,
                                weight_decay=1e-4)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        data = reference.data_preprocessor(batch, True)
        parts = reference(**data, mode='loss')
    sum(parts.values()).backward()
    optimizer.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(p, q), name
    # and close to the float32 step: bf16 rounding flips the signs of a few
    # near-zero activations, so only a loose agreement holds
    fp32 = train_steps(tiny_skd_model(), steps=1)[0]
    for key in ('loss_cls', 'loss_feat'):
        assert float(log_vars[key]) == pytest.approx(fp32[key], rel=0.05)
