"""SetupCheckHook on a real runner: a run whose hooks do not fit the model
(no EDEHook for EDE convs, no SoftLabelBankHook for a bank, either of them
twice) or whose labels do not fit the head stops at ``before_train``, before
the first iteration, with the line to change."""
import copy
import os

import numpy as np
import pytest
from hook_runner_case import HookRunnerCase, ToyImageDataset, get_hook
from mmengine.registry import DATASETS

from skd_bnn_mm.engine.hooks import SetupCheckHook

NO_EDE = ('the model has 18 IRConv2d layers with sign="ede" but no EDEHook: '
          't would stay at its initial value for the whole run. Add '
          "dict(type='EDEHook', t_min=1e-3, t_max=10.0) to custom_hooks, or "
          "use conv_cfg sign='ste'.")
NO_BANK = ('the model has a SoftLabelBank but no SoftLabelBankHook: the bank '
           'would never be filled and loss_label would stay 0. Add '
           "dict(type='SoftLabelBankHook') to custom_hooks, or remove the "
           'label loss from model.distill.')


def _twice(kind):
    return (f'2 {kind} hooks are registered; they would all run. Keep one in '
            'custom_hooks (a config that inherits custom_hooks and adds its '
            'own gets both).')


class LabelledToyImageDataset(ToyImageDataset):
    """ToyImageDataset with mmpretrain's ``get_gt_labels``."""

    def get_gt_labels(self):
        return np.array(self.labels)


class TestSetupCheckHook(HookRunnerCase):

    def setUp(self):
        super().setUp()
        DATASETS.register_module(module=LabelledToyImageDataset, force=True)
        # the tiny SKD-BNN ResNet-20: 18 IRConv2d (sign='ede'), a bank
        self.cfg = self.tiny_skd_cfg(self.epoch_based_cfg)
        self.cfg.train_cfg.max_epochs = 1
        self.cfg.default_hooks.setup_check = dict(type='SetupCheckHook')
        self.cfg.default_hooks.checkpoint = dict(
            type='CheckpointHook', by_epoch=False, interval=1)

    def tearDown(self):
        DATASETS.module_dict.pop('LabelledToyImageDataset', None)
        super().tearDown()

    def _runner(self, *hooks, **changes):
        cfg = copy.deepcopy(self.cfg)
        cfg.custom_hooks = [dict(type=h) for h in hooks]
        cfg.merge_from_dict(changes)
        runner = self.build_runner(cfg)
        get_hook(runner, SetupCheckHook)  # from default_hooks
        return runner

    def _train(self, *hooks, **changes):
        runner = self._runner(*hooks, **changes)
        runner.train()
        return runner

    def _refused(self, *hooks, **changes):
        runner = self._runner(*hooks, **changes)
        with pytest.raises(ValueError) as err:
            runner.train()
        # before the first iteration: nothing trained, nothing saved
        assert runner.iter == 0
        assert 'train/loss' not in runner.message_hub.log_scalars
        assert not [n for n in os.listdir(self.temp_dir.name)
                    if n.endswith('.pth')]
        return str(err.value)

    def test_hooks_that_fit_train(self):
        runner = self._train('EDEHook', 'SoftLabelBankHook')
        assert runner.iter == 4
        # STE convs need no EDEHook
        self.clear_work_dir()
        runner = self._train('SoftLabelBankHook', **{
            'model.backbone.conv_cfg': dict(type='IRConv2d', sign='ste')})
        assert runner.iter == 4

    def test_missing_ede_hook(self):
        assert self._refused('SoftLabelBankHook') == \
            'Training not started: ' + NO_EDE

    def test_missing_bank_hook(self):
        assert self._refused('EDEHook') == 'Training not started: ' + NO_BANK

    def test_doubled_hooks(self):
        assert self._refused('EDEHook', 'EDEHook', 'SoftLabelBankHook') == \
            'Training not started: ' + _twice('EDEHook')
        assert self._refused('EDEHook', 'SoftLabelBankHook',
                             'SoftLabelBankHook') == \
            'Training not started: ' + _twice('SoftLabelBankHook')

    def test_every_problem_in_one_message(self):
        assert self._refused('SoftLabelBankHook', 'SoftLabelBankHook') == (
            'Training not started: ' + _twice('SoftLabelBankHook')
            + ' Also: ' + NO_EDE)
        assert self._refused() == \
            'Training not started: ' + NO_EDE + ' Also: ' + NO_BANK

    def test_labels_past_num_classes(self):
        changes = {'model.head.num_classes': 5,
                   'model.data_preprocessor.num_classes': 5,
                   'train_dataloader.dataset': dict(
                       type='LabelledToyImageDataset', num_classes=10,
                       classes=[str(i) for i in range(10)])}
        msg = self._refused('EDEHook', 'SoftLabelBankHook', **changes)
        assert msg == (
            'Training not started: model.head.num_classes=5, but '
            'LabelledToyImageDataset has labels up to 9 (10 classes): set '
            'model.head.num_classes=10 (and data_preprocessor.num_classes=10)'
            ', or use a dataset with 5 classes.')
