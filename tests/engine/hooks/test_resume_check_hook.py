"""ResumeCheckHook on real runners: what a resume refuses, drops and takes
from the config, and that ``load_from`` stays lenient."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.testing import RunnerTestCase

from skd_bnn_mm.engine.hooks import ResumeCheckHook
from skd_bnn_mm.engine.runner import SafeRunner
from skd_bnn_mm.utils import CheckpointError


class TestResumeCheckHook(RunnerTestCase):

    def setUp(self):
        super().setUp()
        cfg = copy.deepcopy(self.epoch_based_cfg)
        cfg.train_cfg.max_epochs = 1
        cfg.train_cfg.val_interval = 10
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
        self.build_runner(cfg).train()
        self.ckpt = osp.join(self.temp_dir.name, 'epoch_1.pth')
        self.saved = torch.load(self.ckpt, weights_only=False)

    def build_runner(self, cfg):
        cfg.experiment_name = self.experiment_name
        return SafeRunner.from_cfg(cfg)

    def _edited(self, edit, name='edited.pth'):
        ckpt = copy.deepcopy(self.saved)
        edit(ckpt)
        path = osp.join(self.temp_dir.name, name)
        torch.save(ckpt, path)
        return path

    def _runner(self, path, resume=True, **changes):
        cfg = copy.deepcopy(self.epoch_based_cfg)
        cfg.train_cfg.max_epochs = 2
        cfg.train_cfg.val_interval = 10
        cfg.work_dir = osp.join(self.temp_dir.name, 'second')
        cfg.resume, cfg.load_from = resume, path
        cfg.merge_from_dict(changes)
        return self.build_runner(cfg)

    def _model_state(self, runner):
        return {k: v.clone() for k, v in runner.model.state_dict().items()}

    def test_is_a_default_hook_of_the_runner_and_can_be_removed(self):
        runner = self._runner(self.ckpt)
        hooks = [h for h in runner.hooks if isinstance(h, ResumeCheckHook)]
        assert len(hooks) == 1 and hooks[0].priority == 'VERY_HIGH'
        runner = self._runner(self.ckpt, **{'default_hooks.resume_check':
                                            None})
        assert not any(isinstance(h, ResumeCheckHook) for h in runner.hooks)

    def test_resume_refuses_another_model_and_changes_nothing(self):
        path = self._edited(lambda c: c['state_dict'].update(
            {'linear2.weight': torch.zeros(3, 2)}))
        runner = self._runner(path)
        before = self._model_state(runner)
        with pytest.raises(RuntimeError) as err:
            runner.train()
        msg = str(err.value)
        assert f'Cannot resume from "{path}"' in msg
        assert 'saved by a different model' in msg
        assert 'linear2.weight: checkpoint (3, 2) vs model (1, 2)' in msg
        assert 'load_from' in msg
        for key, value in runner.model.state_dict().items():
            assert torch.equal(value, before[key]), key
        # without the hook, mmengine would have gone on (shape mismatch is
        # only a warning in its non-strict load)
        extra = self._edited(lambda c: c['state_dict'].update(
            {'linear3.weight': torch.zeros(1)}), 'extra.pth')
        with pytest.raises(RuntimeError, match='not in model: linear3.weight'):
            self._runner(extra).train()
        self._runner(extra, **{'default_hooks.resume_check': None}).train()

    def test_load_from_stays_lenient(self):
        path = self._edited(lambda c: c['state_dict'].update(
            {'linear3.weight': torch.zeros(1)}))
        runner = self._runner(path, resume=False)
        runner.train()  # fine-tuning from a partial match is allowed
        assert runner.epoch == 2

    def test_non_finite_values_are_refused_on_every_load(self):
        def nan(c):
            c['state_dict']['linear1.bias'] = torch.tensor([0., float('nan')])
        path = self._edited(nan)
        for resume in (True, False):
            runner = self._runner(path, resume=resume)
            with pytest.raises(CheckpointError) as err:
                runner.train()
            assert f'Cannot load "{path}"' in str(err.value)
            assert 'linear1.bias holds 1 NaN/inf value(s) of 2' in str(
                err.value)

    def test_resume_past_max_epochs_is_refused(self):
        path = self._edited(lambda c: c['meta'].update(epoch=3))
        with pytest.raises(CheckpointError,
                           match='saved at epoch 3, past the config\'s 2'):
            self._runner(path).train()

    def test_not_a_training_checkpoint(self):
        path = osp.join(self.temp_dir.name, 'weights.pth')
        torch.save(dict(state_dict=self.saved['state_dict']), path)
        with pytest.raises(CheckpointError,
                           match='not a training checkpoint'):
            self._runner(path).train()

    def test_drops_what_mmengine_would_run_or_delete(self):
        outside = osp.join(self.temp_dir.name, 'elsewhere', 'keep.pth')

        def hostile(c):
            c['meta']['config'] = "raise SystemExit('ran meta config')"
            c['message_hub']['runtime_info']['best_ckpt'] = outside
            c['message_hub']['runtime_info']['keep_ckpt_ids'] = ['x']
        runner = self._runner(self._edited(hostile))
        with self.assertLogs(runner.logger, 'WARNING') as logs:
            runner.train()  # mmengine would have executed meta['config']
        text = '\n'.join(logs.output)
        assert 'Ignored meta["config"]' in text
        assert f"Ignored best_ckpt='{outside}'" in text
        assert "Ignored keep_ckpt_ids=['x']" in text
        assert runner.message_hub.get_info('best_ckpt') is None
        assert runner.epoch == 2

    def test_config_wins_over_the_checkpoint_schedule(self):
        cfg_lr = 0.05
        runner = self._runner(self.ckpt, **{
            'optim_wrapper.optimizer.lr': cfg_lr,
            'optim_wrapper.optimizer.momentum': 0.5})
        seen = []

        class Probe(ResumeCheckHook.__mro__[1]):  # a plain mmengine Hook
            priority = 'LOWEST'

            def before_train(self, runner):
                seen.append(dict(runner.optim_wrapper.param_groups[0]))

        runner.register_hook(Probe())
        with self.assertLogs(runner.logger, 'WARNING') as logs:
            runner.train()
        group = seen[0]
        text = '\n'.join(logs.output)
        assert 'with a config that differs from the checkpoint' in text
        assert 'optimizer group 0 lr: 0.1 -> 0.05' in text
        assert 'optimizer group 0 momentum: 0 -> 0.5' in text
        # the checkpoint holds lr 0.1, momentum 0: the config's values win
        assert self.saved['optimizer']['param_groups'][0]['lr'] == 0.1
        assert group['lr'] == cfg_lr and group['momentum'] == 0.5
        assert runner.epoch == 2  # the restored step is kept: one more epoch

    def test_same_config_resume_changes_nothing(self):
        runner = self._runner(self.ckpt)
        with self.assertLogs(runner.logger, 'INFO') as logs:
            runner.train()
        assert not any('differs from the checkpoint' in line
                       for line in logs.output)
        assert runner.optim_wrapper.param_groups[0]['lr'] == 0.1
        assert runner.resume_from is None  # only set while resume() runs
