"""FastPathHook on a real runner: from ``custom_hooks``, ``channels_last``
puts the model's 4-D parameters and buffers and every image batch in the
channels-last layout before training, validation and testing (once: one
input hook), the optimizer built before keeps training them; under DDP it
converts the wrapped model and warns once; off by default."""
import copy

import torch
from hook_runner_case import HookRunnerCase, get_hook
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from skd_bnn_mm.engine.hooks import FastPathHook
from skd_bnn_mm.models.layers import IRConv2d

CL = torch.channels_last


def _is_cl(t):
    """Channels-last and not also plain contiguous (a real NHWC layout)."""
    return t.is_contiguous(memory_format=CL) and not t.is_contiguous()


class LayoutProbe(Hook):
    """Runs after FastPathHook (VERY_HIGH): records the layouts it left in
    ``before_train`` and the layout of every image batch the stem conv
    sees."""

    priority = 'NORMAL'

    def __init__(self):
        self.inputs = []

    def before_train(self, runner):
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        self.tensors = dict(model.named_parameters())
        self.tensors.update(model.named_buffers())
        self.tensors = {k: v for k, v in self.tensors.items()
                        if v.dim() == 4}
        self.layouts = {k: _is_cl(v) for k, v in self.tensors.items()}
        self.start = {k: v.detach().clone() for k, v in self.tensors.items()}
        self.input_hooks = len(model.backbone._forward_pre_hooks)
        model.backbone.stem_conv.register_forward_pre_hook(
            lambda mod, args: self.inputs.append(_is_cl(args[0])))


class TestFastPathHook(HookRunnerCase):

    def _cfg(self, **hook_args):
        """Tiny SKD-BNN, one epoch of 3 iterations, validation (3) and a
        test loop (3) on the same 12 toy images."""
        cfg = self.tiny_skd_cfg(self.epoch_based_cfg, num_samples=12)
        cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
        loader = dict(dataset=dict(type='ToyImageDataset', num_samples=12),
                      sampler=dict(type='DefaultSampler', shuffle=False),
                      batch_size=4, num_workers=0)
        for split in ('val', 'test'):
            cfg[f'{split}_dataloader'] = copy.deepcopy(loader)
            cfg[f'{split}_cfg'] = dict()
            cfg[f'{split}_evaluator'] = dict(type='Accuracy', topk=(1, ))
        cfg.custom_hooks = [dict(type='FastPathHook', **hook_args)]
        return cfg

    def _run(self, cfg):
        runner = self.build_runner(cfg)
        probe = LayoutProbe()
        runner.register_hook(probe)
        runner.train()
        runner.test()
        return runner, probe

    def test_channels_last_converts_the_model_and_every_batch(self):
        runner, probe = self._run(self._cfg(channels_last=True))
        hook = get_hook(runner, FastPathHook)
        assert hook.channels_last and hook.priority == 'VERY_HIGH'
        model = runner.model
        # after before_train: every 4-D parameter and buffer is NHWC,
        # every conv (the binary ones included) among them
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert sum(isinstance(m, IRConv2d) for m in convs) == 18
        assert len(probe.tensors) >= len(convs)
        assert all(probe.layouts.values()), probe.layouts
        assert probe.input_hooks == 1
        # the optimizer was built before the conversion and still trains the
        # converted parameters (the same objects), which keep their layout
        assert not torch.equal(probe.start['backbone.stem_conv.weight'],
                               model.backbone.stem_conv.weight)
        assert all(_is_cl(c.weight) for c in convs)
        # 3 training batches (student and teacher pass: the teacher twin
        # shares the stem conv and the backbone's input hook), 3 validation
        # and 3 test batches, all NHWC at the stem
        assert len(probe.inputs) == 12 and all(probe.inputs), probe.inputs
        # before_val and before_test applied it again: still one input hook
        assert len(model.backbone._forward_pre_hooks) == 1
        # a plain NCHW batch outside the loops is converted too
        probe.inputs.clear()
        model(torch.randn(2, 3, 8, 8), mode='tensor')
        assert probe.inputs == [True]

    def test_off_by_default_changes_nothing(self):
        runner, probe = self._run(self._cfg())
        assert not get_hook(runner, FastPathHook).channels_last
        assert probe.input_hooks == 0
        assert not runner.model.backbone._forward_pre_hooks
        assert probe.tensors and not any(probe.layouts.values())
        assert all(t.is_contiguous() for t in probe.tensors.values())
        assert runner.model.backbone.stem_conv.weight.is_contiguous()
        assert len(probe.inputs) == 12 and not any(probe.inputs)

    def test_wrapped_model_is_converted_and_warned_about_once(self):
        """Under DDP (one gloo process) the wrapped module is converted, and
        the warning that DDP now copies gradients between layouts is logged
        once for training, validation and testing together."""
        self.setup_dist_env()
        cfg = self._cfg(channels_last=True)
        cfg.launcher = 'pytorch'
        runner = self.build_runner(cfg)
        assert is_model_wrapper(runner.model)
        probe = LayoutProbe()
        runner.register_hook(probe)
        with self.assertLogs(runner.logger, 'WARNING') as logs:
            runner.train()
            runner.test()
        warned = [r.getMessage() for r in logs.records
                  if 'FastPathHook' in r.getMessage()]
        assert len(warned) == 1, warned
        assert 'on a wrapped (MMDistributedDataParallel) model' in warned[0]
        assert probe.tensors and all(probe.layouts.values()), probe.layouts
        assert probe.input_hooks == 1
        assert len(runner.model.module.backbone._forward_pre_hooks) == 1
        assert len(probe.inputs) == 12 and all(probe.inputs), probe.inputs
