"""The AMP choice the tools call: ``--amp`` and the device to an
``optim_wrapper`` config (AutocastOptimWrapper on CPU, mmengine's
AmpOptimWrapper on CUDA), and back from a config to its choice."""
import pytest
import torch

from skd_bnn_mm.engine.optim.amp import (AMP_CHOICES, amp_optim_wrapper_cfg,
                                         config_amp, default_amp)

SGD = dict(optimizer=dict(type='SGD', lr=0.1))


@pytest.mark.parametrize('amp,device,expected', [
    ('auto', 'cpu', dict(type='AutocastOptimWrapper', dtype='bfloat16')),
    ('auto', 'cuda', dict(type='AmpOptimWrapper', dtype='float16',
                          loss_scale='dynamic')),
    ('fp16', 'cpu', dict(type='AutocastOptimWrapper', dtype='float16',
                         loss_scale='dynamic')),
    ('fp16', 'cuda', dict(type='AmpOptimWrapper', dtype='float16',
                          loss_scale='dynamic')),
    ('bf16', 'cpu', dict(type='AutocastOptimWrapper', dtype='bfloat16')),
    ('bf16', 'cuda', dict(type='AmpOptimWrapper', dtype='bfloat16',
                          loss_scale='dynamic')),
    ('none', 'cpu', dict()),
])
def test_amp_choice_per_device(amp, device, expected):
    assert amp_optim_wrapper_cfg(SGD, amp, device) == dict(SGD, **expected)


def test_amp_choice_keeps_what_the_config_says():
    # a bare --amp keeps a dtype the config names, and its loss scale
    assert amp_optim_wrapper_cfg(dict(SGD, dtype='bfloat16'), 'auto',
                                 'cuda')['dtype'] == 'bfloat16'
    amp = dict(SGD, type='AmpOptimWrapper', dtype='float16',
               loss_scale=512.0)
    assert amp_optim_wrapper_cfg(amp, 'auto', 'cpu') == dict(
        SGD, type='AutocastOptimWrapper', dtype='float16', loss_scale=512.0)
    auto = dict(SGD, type='AutocastOptimWrapper', dtype='float16')
    assert amp_optim_wrapper_cfg(auto, 'auto', 'cuda') == auto
    # an explicit choice wins; none goes back to float32
    assert amp_optim_wrapper_cfg(amp, 'bf16', 'cpu') == dict(
        SGD, type='AutocastOptimWrapper', dtype='bfloat16')
    assert amp_optim_wrapper_cfg(amp, 'none', 'cuda') == dict(
        SGD, type='OptimWrapper')
    with pytest.raises(ValueError, match='Cannot add autocast'):
        amp_optim_wrapper_cfg(dict(SGD, type='MyWrapper'), 'fp16', 'cpu')
    with pytest.raises(ValueError, match='Unknown amp'):
        amp_optim_wrapper_cfg(SGD, 'fp8', 'cpu')
    assert AMP_CHOICES == ('none', 'bf16', 'fp16')
    assert (default_amp('cuda'), default_amp('npu'),
            default_amp('cpu')) == ('fp16', 'fp16', 'bf16')


@pytest.mark.parametrize('cfg,expected', [
    (dict(type='OptimWrapper'), 'none'),
    (dict(type='AmpOptimWrapper'), 'fp16'),
    (dict(type='AmpOptimWrapper', dtype='bfloat16'), 'bf16'),
    (dict(type='AutocastOptimWrapper'), 'bf16'),
    (dict(type='AutocastOptimWrapper', dtype='float16'), 'fp16'),
    (dict(type='AutocastOptimWrapper', dtype=torch.float16), 'fp16'),
])
def test_config_amp_reads_the_wrapper(cfg, expected):
    assert config_amp(cfg) == expected


def test_amp_optim_wrapper_cfg():
    base = dict(optimizer=dict(type='SGD', lr=0.1), clip_grad=None)
    assert amp_optim_wrapper_cfg(base, 'none', 'cpu') == base
    cpu = amp_optim_wrapper_cfg(base, 'bf16', 'cpu')
    assert cpu == dict(base, type='AutocastOptimWrapper', dtype='bfloat16')
    cuda = amp_optim_wrapper_cfg(base, 'fp16', 'cuda')
    assert cuda == dict(base, type='AmpOptimWrapper', dtype='float16',
                        loss_scale='dynamic')
    assert amp_optim_wrapper_cfg(dict(cuda), 'bf16', 'cuda')['dtype'] == \
        'bfloat16'
    # 'none' means float32: an AMP wrapper becomes a plain one
    assert amp_optim_wrapper_cfg(cuda, 'none', 'cuda') == dict(
        base, type='OptimWrapper')
    assert amp_optim_wrapper_cfg(dict(base, type='MyWrapper'), 'none',
                                 'cpu')['type'] == 'MyWrapper'
    assert 'type' not in base  # the input is not modified
    # fp16 without CUDA: autocast with dynamic loss scaling
    assert amp_optim_wrapper_cfg(base, 'fp16', 'cpu') == dict(
        base, type='AutocastOptimWrapper', dtype='float16',
        loss_scale='dynamic')
    with pytest.raises(ValueError, match='none, bf16, fp16'):
        amp_optim_wrapper_cfg(base, 'int8', 'cpu')
    with pytest.raises(ValueError, match='Cannot add autocast'):
        amp_optim_wrapper_cfg(dict(base, type='MyWrapper'), 'bf16', 'cpu')
