"""SafeCheckpointHook on a real runner: ``max_keep_ckpts`` and ``save_best``
as mmengine's CheckpointHook, but an old file is removed only after its
successor and the ``last_checkpoint`` pointer were written, and a failed
save removes nothing."""
import copy
import os
import os.path as osp

import pytest
from hook_runner_case import HookRunnerCase, get_hook
from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS

from skd_bnn_mm.engine.hooks import SafeCheckpointHook


class RisingMetric(BaseMetric):
    """``acc`` is 1, 2, 3, ... at successive evaluations: every validation
    gives a new best checkpoint."""

    calls = 0

    def process(self, data_batch, data_samples):
        self.results.append(0)

    def compute_metrics(self, results):
        RisingMetric.calls += 1
        return dict(acc=RisingMetric.calls)


class TestSafeCheckpointHook(HookRunnerCase):

    def setUp(self):
        super().setUp()
        METRICS.register_module(module=RisingMetric, force=True)
        RisingMetric.calls = 0
        cfg = copy.deepcopy(self.iter_based_cfg)  # ToyModel, 12 iterations
        cfg.train_cfg = dict(by_epoch=False, max_iters=5, val_interval=100)
        cfg.default_hooks.checkpoint = dict(
            type='SafeCheckpointHook', by_epoch=False, interval=1,
            max_keep_ckpts=2)
        self.cfg = cfg
        self.work = self.temp_dir.name

    def tearDown(self):
        METRICS.module_dict.pop('RisingMetric', None)
        super().tearDown()

    def _files(self):
        return sorted(n for n in os.listdir(self.work) if n.endswith('.pth'))

    def _pointer(self):
        path = osp.join(self.work, 'last_checkpoint')
        if not osp.isfile(path):
            return None
        with open(path) as f:
            return osp.basename(f.read().strip())

    def _record_removals(self, runner):
        """Every file the hook removes, with the work dir's checkpoints and
        ``last_checkpoint`` at that moment."""
        hook = get_hook(runner, SafeCheckpointHook)
        removals = []
        before_train = hook.before_train

        def spy_on_backend(runner):
            before_train(runner)  # sets hook.file_backend
            backend = hook.file_backend
            remove = backend.remove

            def recording_remove(path):
                removals.append((osp.basename(path), self._files(),
                                 self._pointer()))
                remove(path)

            backend.remove = recording_remove

        hook.before_train = spy_on_backend
        return removals

    def test_keeps_max_keep_ckpts_removing_after_the_new_one(self):
        runner = self.build_runner(self.cfg)
        removals = self._record_removals(runner)
        runner.train()
        assert self._files() == ['iter_4.pth', 'iter_5.pth']
        assert self._pointer() == 'iter_5.pth'
        # iter_k goes once iter_{k+2} is on disk and last_checkpoint names it
        assert removals == [
            (f'iter_{k}.pth', [f'iter_{k}.pth', f'iter_{k + 1}.pth',
                               f'iter_{k + 2}.pth'], f'iter_{k + 2}.pth')
            for k in (1, 2, 3)]
        assert runner.message_hub.get_info('keep_ckpt_ids') == [4, 5]

    def test_a_failed_save_removes_nothing(self):
        cfg = copy.deepcopy(self.cfg)
        cfg.default_hooks.checkpoint.max_keep_ckpts = 1
        runner = self.build_runner(cfg)
        removals = self._record_removals(runner)
        save, calls = runner.save_checkpoint, []

        def failing_third(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:  # iter_3.pth: the disk is full
                raise OSError(28, 'No space left on device')
            return save(*args, **kwargs)

        runner.save_checkpoint = failing_third
        with pytest.raises(OSError, match='No space left'):
            runner.train()
        # mmengine's hook would have removed iter_2 before the failed write
        assert self._files() == ['iter_2.pth']
        assert self._pointer() == 'iter_2.pth'
        assert [r[0] for r in removals] == ['iter_1.pth']

    def test_previous_best_removed_after_the_new_best(self):
        cfg = copy.deepcopy(self.cfg)
        cfg.train_cfg = dict(by_epoch=False, max_iters=3, val_interval=1)
        cfg.val_evaluator = [dict(type='RisingMetric')]
        cfg.default_hooks.checkpoint = dict(
            type='SafeCheckpointHook', by_epoch=False, interval=100,
            save_best='acc', rule='greater')
        runner = self.build_runner(cfg)
        removals = self._record_removals(runner)
        runner.train()
        # regular checkpoint: only the last iteration (save_last)
        assert self._files() == ['best_acc_iter_3.pth', 'iter_3.pth']
        assert [(name, files) for name, files, _ in removals] == [
            ('best_acc_iter_1.pth',
             ['best_acc_iter_1.pth', 'best_acc_iter_2.pth']),
            ('best_acc_iter_2.pth',
             ['best_acc_iter_2.pth', 'best_acc_iter_3.pth', 'iter_3.pth'])]
        assert runner.message_hub.get_info('best_score') == 3
