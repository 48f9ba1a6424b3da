"""BinaryInputCheckHook on a real runner: the first training forward of a
binary ResNet with ReLU stops the run (or warns and goes on)."""
import os.path as osp

import pytest
from hook_runner_case import HookRunnerCase, get_hook
from mmengine.config import Config
from mmpretrain.registry import HOOKS

from skd_bnn_mm.engine.hooks import BinaryInputCheckHook
from skd_bnn_mm.models.layers import IRConv2d
from skd_bnn_mm.models.utils import (NonNegativeBinaryInputError,
                                     NonNegativeBinaryInputWarning)

# mmpretrain's own model file behind the README snippet
RESNET18_CIFAR = osp.join(
    osp.dirname(__import__('mmpretrain').__file__),
    '.mim/configs/_base_/models/resnet18_cifar.py')
# 8 channels wide (64 at the end) to train in a moment on the CPU
RELU_BACKBONE = dict(type='ResNet_CIFAR', depth=18, stem_channels=8,
                     base_channels=8, conv_cfg=dict(type='IRConv2d'))


def _hook_counts(model):
    return {n: (len(m._forward_pre_hooks), len(m._forward_hooks))
            for n, m in model.named_modules()}


class TestBinaryInputCheckHook(HookRunnerCase):

    def _cfg(self, action):
        """mmpretrain's resnet18_cifar.py classifier, narrower, with IRConv2d
        convs and its ReLUs, on normalised 16x16 images (the stem sees x < 0)."""
        cfg = self.epoch_based_cfg
        model = Config.fromfile(RESNET18_CIFAR).model
        model.backbone = RELU_BACKBONE
        model.head.in_channels = 64
        model.data_preprocessor = dict(
            num_classes=10, mean=[125.3, 123.0, 113.9],
            std=[63.0, 62.1, 66.7], to_rgb=False)
        cfg.model = model
        cfg.train_dataloader.dataset = dict(type='ToyImageDataset',
                                            num_samples=4, size=16)
        cfg.train_dataloader.batch_size = 2
        cfg.train_dataloader.sampler.shuffle = False
        cfg.train_cfg = dict(by_epoch=True, max_epochs=1)
        for key in ('val_dataloader', 'val_evaluator', 'val_cfg'):
            cfg[key] = None
        cfg.custom_hooks = [dict(type='BinaryInputCheckHook', action=action)]
        cfg.default_hooks.checkpoint = None
        cfg.randomness = dict(seed=0)
        return cfg

    def test_hook_refuses_at_first_iteration(self):
        runner = self.build_runner(self._cfg('error'))
        hook = get_hook(runner, BinaryInputCheckHook)
        assert sum(isinstance(m, IRConv2d)
                   for m in runner.model.modules()) == 20
        with pytest.raises(NonNegativeBinaryInputError, match='19 of 20'):
            runner.train()
        assert runner.iter == 0  # stopped in the first forward
        hook.after_train_iter(runner, 0)
        assert all(v == (0, 0) for v in _hook_counts(runner.model).values())

    def test_warn_mode_trains_on_and_leaves_no_hooks(self):
        runner = self.build_runner(self._cfg('warn'))
        with pytest.warns(NonNegativeBinaryInputWarning, match='19 of 20'):
            runner.train()
        assert runner.iter == 2
        assert all(v == (0, 0) for v in _hook_counts(runner.model).values())

    def test_bad_action(self):
        with pytest.raises(ValueError, match="'error' or 'warn'"):
            HOOKS.build(dict(type='BinaryInputCheckHook', action='maybe'))
