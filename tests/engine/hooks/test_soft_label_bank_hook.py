"""SoftLabelBankHook on a real runner (tiny SKD-BNN, one process); two
processes: test_soft_label_bank_hook_dist.py."""
import json
import math
import os.path as osp

import pytest
import torch
from hook_runner_case import HookRunnerCase, get_hook
from mmengine.hooks import CheckpointHook
from mmengine.runner.priority import get_priority

from skd_bnn_mm.engine.hooks import SoftLabelBankHook

CLASSES = ('cat', 'dog', 'emu')


def _logits():
    # argmax per row: 0, 1, 2, 0, 2
    return torch.tensor([[3.0, 1.0, 0.0],
                         [0.0, 2.0, 1.0],
                         [1.0, 0.0, 4.0],
                         [5.0, 1.0, 1.0],
                         [0.0, 1.0, 2.0]])


def test_invalid_arguments():
    with pytest.raises(ValueError, match='save_interval'):
        SoftLabelBankHook(save_interval=-1)


class TestSoftLabelBankHook(HookRunnerCase):

    def _runner(self, epoch=0, max_epochs=4, **hook_args):
        """Tiny SKD-BNN over 3 classes named ``CLASSES``, the hook from the
        config; the loop stands at ``epoch``."""
        cfg = self.tiny_skd_cfg(self.epoch_based_cfg, num_classes=3,
                                classes=CLASSES, num_samples=8)
        cfg.train_cfg.max_epochs = max_epochs
        cfg.custom_hooks = [dict(type='SoftLabelBankHook', **hook_args)]
        runner = self.build_runner(cfg)
        runner.train_loop._epoch = epoch
        return runner, get_hook(runner, SoftLabelBankHook)

    def test_hook_updates_once_per_epoch_and_dumps(self):
        runner, hook = self._runner(save_interval=2)
        bank = runner.model.soft_label_bank
        hook.before_train(runner)
        bank.accumulate(_logits(), torch.tensor([0, 1, 1, 0, 2]))
        hook.after_train_epoch(runner)
        hook.after_train_epoch(runner)  # twice in the same epoch: no effect
        assert int(bank.num_updates) == 1 and int(bank.last_epoch) == 0
        first = bank.bank.clone()
        folder = osp.join(runner.work_dir, 'soft_label_bank')
        assert not osp.exists(folder)
        runner.train_loop._epoch = 1
        bank.accumulate(torch.tensor([[0.0, 0.0, 6.0]]), torch.tensor([2]))
        hook.after_train_epoch(runner)
        assert int(bank.num_updates) == 2
        with open(osp.join(folder, 'epoch_2.json')) as f:
            dump = json.load(f)
        assert dump['epoch'] == 2 and dump['classes'] == ['cat', 'dog', 'emu']
        assert dump['correct_counts'] == [0, 0, 1]
        assert dump['bank']['cat'] == first[0].tolist()
        assert dump['bank']['emu'] == [0.0, 0.0, 6.0]

    def test_hook_after_resume_and_after_load_from(self):
        runner, hook = self._runner(epoch=3)
        bank = runner.model.soft_label_bank
        # resumed from the end of epoch index 2: bank already holds it
        bank.last_epoch.fill_(2)
        hook.before_train(runner)
        assert int(bank.last_epoch) == 2
        hook.after_train_epoch(runner)  # epoch index 3 is folded in
        assert int(bank.last_epoch) == 3 and int(bank.num_updates) == 1
        # load_from a run that went further (e.g. stage 1 of 128 epochs)
        runner, hook = self._runner(epoch=0)
        bank = runner.model.soft_label_bank
        bank.last_epoch.fill_(127)
        hook.before_train(runner)
        assert int(bank.last_epoch) == -1
        hook.after_train_epoch(runner)
        assert int(bank.num_updates) == 1 and int(bank.last_epoch) == 0

    def test_hook_runs_before_checkpoint_hook(self):
        assert get_priority(SoftLabelBankHook.priority) < get_priority(
            CheckpointHook.priority)
        runner, _ = self._runner(max_epochs=2, save_interval=1)
        order = [type(h) for h in runner.hooks]
        assert order.index(SoftLabelBankHook) < order.index(CheckpointHook)
        runner.train()
        bank = runner.model.soft_label_bank
        assert int(bank.num_updates) == 2 and int(bank.last_epoch) == 1
        # each epoch's checkpoint holds the bank folded at its end
        state = torch.load(osp.join(runner.work_dir, 'epoch_1.pth'),
                           weights_only=False)['state_dict']
        assert int(state['soft_label_bank.num_updates']) == 1
        assert int(state['soft_label_bank.last_epoch']) == 0
        assert int(state['soft_label_bank.counts'].sum()) == 0
        with open(osp.join(runner.work_dir, 'soft_label_bank',
                           'epoch_2.json')) as f:
            dump = json.load(f)
        assert dump['classes'] == list(CLASSES)
        assert dump['correct_counts'] == bank.last_counts.tolist()
        assert dump['bank'] == dict(zip(CLASSES, bank.bank.tolist()))

    def test_hook_leaves_the_loss_check_to_finite_loss_hook(self):
        """The non-finite loss check is FiniteLossHook's (in every config,
        and tested with it); the bank hook no longer raises on a non-finite
        part."""
        runner, hook = self._runner()
        outputs = dict(loss=torch.tensor(math.nan),
                       loss_cls=torch.tensor(1.0),
                       loss_feat=torch.tensor(math.inf))
        for key, value in outputs.items():  # what RuntimeInfoHook does
            runner.message_hub.update_scalar(f'train/{key}', value)
        hook.after_train_iter(runner, 0, None, outputs)
        SoftLabelBankHook(check_finite=False).after_train_iter(
            runner, 0, None, outputs)
