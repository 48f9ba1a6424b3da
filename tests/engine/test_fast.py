"""skd_bnn_mm.engine.fast: the compile guard, compiled steps equal eager
ones, a runner's compile keeps the optimizer step out, and the SKD step
makes the host wait for the device nowhere."""
import copy
import os
import os.path as osp
import shutil

import pytest
import torch
from mmengine.optim import OptimWrapper, OptimWrapperDict
from tiny_skd_step import SGD, tiny_skd_model, train_steps
from torch.utils._python_dispatch import TorchDispatchMode

from skd_bnn_mm.engine import fast
from skd_bnn_mm.engine.fast import (compile_train_step,
                                    keep_optimizer_step_uncompiled)
from skd_bnn_mm.engine.optim import amp

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_amp_choice_is_re_exported_unchanged():
    assert fast.amp_optim_wrapper_cfg is amp.amp_optim_wrapper_cfg
    assert fast.AMP_CHOICES is amp.AMP_CHOICES


# ------------------------------------------------------------ compile
def test_compile_guard_without_compiler(monkeypatch):
    monkeypatch.setattr(shutil, 'which', lambda name: None)
    with pytest.raises(RuntimeError, match='C\\+\\+ compiler'):
        compile_train_step(tiny_skd_model())


@pytest.mark.skipif(os.environ.get('SKD_BNN_TEST_COMPILE') != '1',
                    reason='torch.compile of the SKD step takes minutes on '
                    'CPU; set SKD_BNN_TEST_COMPILE=1 to run it')
def test_compiled_train_step_matches_eager():
    eager = train_steps(tiny_skd_model(), steps=2)
    compiled = train_steps(compile_train_step(tiny_skd_model()), steps=2)
    for a, b in zip(eager, compiled):
        for key in ('loss_cls', 'loss_feat'):
            assert b[key] == pytest.approx(a[key], rel=1e-4), key


def test_keep_optimizer_step_uncompiled_wraps_each_step_once():
    """Each optimizer of a wrapper or a wrapper dict gets a step that
    torch.compile skips; a second call keeps that same step."""
    params = [torch.nn.Parameter(torch.ones(2)) for _ in range(2)]
    single = OptimWrapper(torch.optim.SGD([params[0]], lr=0.1))
    both = OptimWrapperDict(a=single, b=OptimWrapper(
        torch.optim.SGD([params[1]], lr=0.1)))
    keep_optimizer_step_uncompiled(single)
    step = single.optimizer.step
    assert step._skd_uncompiled
    keep_optimizer_step_uncompiled(both)
    assert single.optimizer.step is step  # not wrapped again
    assert both['b'].optimizer.step._skd_uncompiled
    params[1].grad = torch.ones(2)
    both['b'].optimizer.step()  # still steps
    torch.testing.assert_close(params[1].detach(), torch.full((2, ), 0.9))


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


# ------------------------------------------------- host-device waits
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
    from mmengine.optim import build_optim_wrapper
    from mmpretrain.datasets.transforms import PackInputs, RandomFlip

    from skd_bnn_mm.datasets import PaddedRandomCrop
    model = tiny_skd_model().to(device)
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
