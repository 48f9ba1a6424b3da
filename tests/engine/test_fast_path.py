"""Fast paths give the plain path's results: bitwise where the maths is exact
(binary convs), within float rounding elsewhere
(on a model small enough that rounding flips no binary activation).
"""
import copy
import os
import os.path as osp
import shutil
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper
from mmpretrain.registry import HOOKS, MODELS
from tiny_skd_step import SGD, TINY_SKD, random_batches, tiny_skd_model
from torch.utils._python_dispatch import TorchDispatchMode

from skd_bnn_mm.engine.fast import (amp_optim_wrapper_cfg, compile_train_step,
                                    to_channels_last)
from skd_bnn_mm.engine.optim import AutocastOptimWrapper
from skd_bnn_mm.models.layers import IRConv2d
from skd_bnn_mm.models.losses import ChannelSpatialDistillLoss

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

CL = torch.channels_last


def _model(dtype=torch.float32, channels_last=False):
    model = tiny_skd_model()
    model.to(dtype).train()
    if channels_last:
        to_channels_last(model)
    return model


def _layouts(model):
    """Memory layout of every binary conv output in the next forward."""
    seen = []
    handles = [m.register_forward_hook(
        lambda mod, args, out: seen.append(out.is_contiguous(
            memory_format=CL) and not out.is_contiguous()))
        for m in model.modules() if isinstance(m, IRConv2d)]
    return seen, handles


# ------------------------------------------------------------ binary conv
@pytest.mark.parametrize('cin,cout,stride,groups', [(16, 32, 1, 1),
                                                    (64, 64, 2, 1),
                                                    (8, 12, 2, 2)])
def test_binary_conv_channels_last_is_bitwise_exact(cin, cout, stride,
                                                    groups):
    torch.manual_seed(cin + stride)
    conv = IRConv2d(cin, cout, 3, stride, 1, groups=groups, bias=False)
    conv_cl = copy.deepcopy(conv).to(memory_format=CL)
    x = torch.randn(3, cin, 9, 9)
    x[0, :, 0, :4] = 0.0  # exact zeros binarise to +1 in both layouts
    y = conv(x)
    y_cl = conv_cl(x.contiguous(memory_format=CL))
    assert y_cl.is_contiguous(memory_format=CL) and not y_cl.is_contiguous()
    # +-1 inputs times +-2^k weights: sums of small integers times 2^k,
    # exact in float32 in any summation order
    assert torch.equal(y, y_cl)
    assert y.abs().max() > 8  # not a degenerate all-small output


def test_binary_conv_bf16_autocast_is_fp32_rounded_once():
    torch.manual_seed(0)
    # 515 inputs: sums up to 515, beyond bf16's 8-bit significand, so a bf16
    # accumulator would lose ones while a float32 one rounds only at the end
    conv = IRConv2d(515, 6, 1, bias=False)
    wb = conv.standardized_weight().detach()
    scale = conv.weight_scale(wb).flatten()
    x = torch.randn(2, 515, 3, 3)
    x[0, :, 0, 0] = torch.where(wb[0, :, 0, 0] >= 0, 1.0, -1.0)
    x[1, :, 1, 1] = torch.where(wb[1, :, 0, 0] >= 0, -1.0, 1.0)
    conv3 = IRConv2d(16, 8, 3, 1, 1, bias=False)
    x3 = torch.randn(4, 16, 6, 6)
    outputs = []
    for layer, inp in ((conv, x), (conv3, x3)):
        y32 = layer(inp)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y16 = layer(inp)
        assert y32.dtype == torch.float32 and y16.dtype == torch.bfloat16
        assert torch.equal(y16.float(), y32.to(torch.bfloat16).float())
        outputs.append((y32, y16))
    (y32, y16), _ = outputs
    assert float(y32[0, 0, 0, 0]) == 515 * float(scale[0])
    assert float(y32[1, 1, 1, 1]) == -515 * float(scale[1])
    # 515 is not a bf16 number; the nearest one, 516, is what comes out
    assert float(y16[0, 0, 0, 0]) == 516 * float(scale[0])
    assert float(y16[1, 1, 1, 1]) == -516 * float(scale[1])


# ------------------------------------------------------------ training
def _train(model, optim_cfg=SGD, steps=3):
    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(optim_cfg))
    return [{k: float(v.detach()) for k, v in model.train_step(
        b, optim_wrapper).items()} for b in random_batches(steps)]


def test_skd_steps_channels_last_match_plain_float32():
    plain = _train(_model())
    fast_model = _model(channels_last=True)
    layouts, handles = _layouts(fast_model)
    fast = _train(fast_model)
    for h in handles:
        h.remove()
    assert layouts and all(layouts)  # the binary convs really ran NHWC
    assert all(p.is_contiguous(memory_format=CL)
               for p in fast_model.parameters() if p.dim() == 4)
    for a, b in zip(plain, fast):
        assert a.keys() == b.keys()
        assert a['loss_feat'] > 0 and a['loss_cluster'] > 0
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-9), key


def test_skd_steps_channels_last_match_plain_float64():
    """In float64 rounding is far too small to flip any sign, so the whole
    three-step trajectory agrees to ~1e-15: any layout mistake would not."""
    results = []
    for channels_last in (False, True):
        model = _model(torch.float64, channels_last)
        optim_wrapper = build_optim_wrapper(model, copy.deepcopy(SGD))
        losses = []
        for batch in random_batches():
            data = model.data_preprocessor(batch, True)
            data['inputs'] = data['inputs'].double()
            parts = model(**data, mode='loss')
            optim_wrapper.update_params(sum(parts.values()))
            losses.append([float(v.detach()) for v in parts.values()])
        results.append(losses)
    for a, b in zip(*results):
        assert b == pytest.approx(a, rel=1e-12, abs=1e-15)


def test_autocast_optim_wrapper_bf16_matches_manual_autocast_step():
    model = _model()
    reference = copy.deepcopy(model)
    batch = random_batches(1)[0]
    dtypes = []
    handles = [m.register_forward_hook(
        lambda mod, args, out: dtypes.append(out.dtype))
        for m in model.modules() if isinstance(m, IRConv2d)]
    wrapper = build_optim_wrapper(model, amp_optim_wrapper_cfg(SGD, 'bf16',
                                                                'cpu'))
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
    fp32 = _train(_model(), steps=1)[0]
    for key in ('loss_cls', 'loss_feat'):
        assert float(log_vars[key]) == pytest.approx(fp32[key], rel=0.05)


def test_distill_loss_reduces_bf16_features_in_float32():
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(4, 8, 6, 6, generator=g).to(torch.bfloat16)
               .requires_grad_() for _ in range(3)]
    teacher = [(s.detach().float() + 0.05 * torch.randn(
        s.shape, generator=g)).to(torch.bfloat16) for s in student]
    loss = ChannelSpatialDistillLoss()(student, teacher)
    assert loss.dtype == torch.float32
    exact = ChannelSpatialDistillLoss()([s.detach().double() for s in student],
                                        [t.double() for t in teacher])
    assert float(loss) == pytest.approx(float(exact), rel=1e-5)
    loss.backward()
    assert student[0].grad.dtype == torch.bfloat16


# ------------------------------------------------------------ switches
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
    with pytest.raises(ValueError, match='"bfloat16" or "float16"'):
        AutocastOptimWrapper(torch.optim.SGD([nn.Parameter(torch.ones(1))],
                                             lr=0.1), dtype='float32')


def test_fast_path_hook_channels_last():
    model = _model()
    hook = HOOKS.build(dict(type='FastPathHook', channels_last=True))
    runner = SimpleNamespace(model=model, logger=None)
    hook.before_train(runner)
    hook.before_val(runner)  # idempotent: one input hook only
    assert len(model.backbone._forward_pre_hooks) == 1
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=CL)
                         and not c.weight.is_contiguous() for c in convs)
    seen = []
    model.backbone.stem_conv.register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].is_contiguous(
            memory_format=CL) and not args[0].is_contiguous()))
    model(torch.randn(2, 3, 8, 8), mode='tensor')
    assert seen == [True]

    off = _model()
    HOOKS.build(dict(type='FastPathHook')).before_train(
        SimpleNamespace(model=off, logger=None))
    assert not off.backbone._forward_pre_hooks
    assert off.backbone.stem_conv.weight.is_contiguous()


def test_compile_guard_without_compiler(monkeypatch):
    monkeypatch.setattr(shutil, 'which', lambda name: None)
    with pytest.raises(RuntimeError, match='C\\+\\+ compiler'):
        compile_train_step(_model())


@pytest.mark.skipif(os.environ.get('SKD_BNN_TEST_COMPILE') != '1',
                    reason='torch.compile of the SKD step takes minutes on '
                    'CPU; set SKD_BNN_TEST_COMPILE=1 to run it')
def test_compiled_train_step_matches_eager():
    eager = _train(_model(), steps=2)
    compiled = _train(compile_train_step(_model()), steps=2)
    for a, b in zip(eager, compiled):
        for key in ('loss_cls', 'loss_feat'):
            assert b[key] == pytest.approx(a[key], rel=1e-4), key


def test_runner_compile_keeps_the_optimizer_step_out(cifar10_subset,
                                                     tmp_path):
    """With ``compile`` in the config, SafeRunner leaves the optimizer step
    uncompiled: the learning rate changes every epoch, and a compiled step
    (which guards the float lr) would be traced again for each new value.
    Three epochs, each with a new learning rate: after the first epoch
    nothing is traced any more."""
    import uuid

    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmpretrain.registry import RUNNERS
    from torch._dynamo import reset
    from torch._dynamo.utils import counters

    class Graphs(Hook):
        def __init__(self):
            self.per_epoch, self.lrs = [], []

        def after_train_epoch(self, runner):
            self.per_epoch.append(counters['stats']['unique_graphs'])
            self.lrs.append(runner.optim_wrapper.get_lr()['lr'][0])

    root = cifar10_subset(20, 10)
    cfg = Config.fromfile(osp.join(ROOT, 'tests', 'data',
                                   'tiny_skd_cifar10.py'))
    cfg.train_dataloader.dataset.data_root = root
    cfg.train_dataloader.dataset.verify_md5 = False
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=100)
    cfg.work_dir = str(tmp_path)
    cfg.experiment_name = f'compile_{uuid.uuid4().hex[:12]}'
    cfg.log_level = 'WARNING'
    cfg.compile = dict(backend='eager')
    graphs = Graphs()
    reset()
    counters.clear()
    try:
        runner = RUNNERS.build(cfg)
        runner.register_hook(graphs)
        runner.train()
    finally:
        reset()
    assert getattr(runner.optim_wrapper.optimizer.step, '_skd_uncompiled',
                   False)
    lrs = graphs.lrs  # a new learning rate in every epoch
    assert lrs[0] != lrs[1] != lrs[2], lrs
    assert graphs.per_epoch[0] > 0
    assert graphs.per_epoch[0] == graphs.per_epoch[1] == graphs.per_epoch[2]


class _SyncingOps(TorchDispatchMode):
    """Records the operators that make the host wait for a CUDA device: a
    tensor read as a Python number or bool, and outputs whose size depends
    on values (nonzero, boolean-mask indexing, unique, bincount, ...).

    Host reads that dispatch no operator on a CPU tensor (``.tolist()``,
    ``.numpy()``, a device-to-host copy) are not seen here; the CUDA test
    below catches them with ``torch.cuda.set_sync_debug_mode``.
    """

    SYNCING = {'_local_scalar_dense', 'is_nonzero', 'item', 'equal',
               'nonzero', 'masked_select', '_unique', '_unique2',
               'unique_dim', 'unique_consecutive', 'bincount',
               'repeat_interleave'}

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.SYNCING or name in ('index', 'index_put_',
                                            'index_put') and any(
                torch.is_tensor(i) and i.dtype == torch.bool
                for i in (args[1] if len(args) > 1 else []) or []):
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def _skd_step_setup(device='cpu'):
    """Tiny SKD-BNN model, its optimizer wrapper and a batch through the
    CIFAR crop and flip, after one step and an epoch end (the bank is on)."""
    import numpy as np
    from mmengine.dataset import default_collate
    from mmpretrain.datasets.transforms import PackInputs, RandomFlip

    from skd_bnn_mm.datasets import PaddedRandomCrop
    cfg = copy.deepcopy(TINY_SKD)
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    model.to(device).train()
    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(SGD))
    crop = PaddedRandomCrop(8, padding=2, padding_mode='edge')
    flip = RandomFlip(prob=0.5, direction='horizontal')
    pack = PackInputs()
    rng = np.random.RandomState(0)
    batch = default_collate([
        pack(flip(crop(dict(img=rng.randint(0, 256, (8, 8, 3),
                                            dtype=np.uint8),
                            gt_label=int(rng.randint(10))))))
        for _ in range(8)
    ])
    model.train_step(batch, optim_wrapper)  # first step (lazy state)
    model.soft_label_bank.update(epoch=0)  # an epoch end: the bank is on
    return model, optim_wrapper, batch


def test_skd_train_step_dispatches_no_syncing_operator():
    """Data preprocessing, student and
    teacher passes, the three losses with the bank on, backward and the
    SGD step dispatch none of the operators that make the host wait for a
    CUDA device. The bank's gate is a tensor, not a bool."""
    model, optim_wrapper, batch = _skd_step_setup()
    assert bool(model.soft_label_bank.active())
    mode = _SyncingOps()
    with mode:
        out = model.train_step(batch, optim_wrapper)
    assert {'loss_feat', 'loss_label', 'loss_cluster'} <= out.keys()
    assert mode.seen == []
    # the recorder catches what it should
    with mode:
        bool(out['loss_cls'] > 0)
        out['loss_cls'].new_ones(3)[torch.tensor([True, False, True])]
    assert mode.seen == ['_local_scalar_dense', 'index']


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_skd_model_step_does_not_wait_for_the_device_on_cuda():
    """On CUDA: the forward and loss of the model (student and teacher
    passes, three losses, bank), backward and the SGD step run without a
    host-device synchronisation (the data preprocessing, whose blocking
    host-to-device copies are mmengine's and mmpretrain's, runs first)."""
    model, optim_wrapper, batch = _skd_step_setup('cuda')
    data = model.data_preprocessor(batch, True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        losses = model(**data, mode='loss')
        parsed, _ = model.parse_losses(losses)
        optim_wrapper.update_params(parsed)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(parsed).item()
