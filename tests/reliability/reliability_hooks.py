"""Test-only hooks, imported by the configs the reliability tests write.

(The folder is put on PYTHONPATH; the module name is unique because
site-packages may hold an unrelated ``tests`` package.)
"""
import builtins
import os
import os.path as osp
import time

import torch
from mmengine import dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS


def _model(runner):
    return runner.model.module if is_model_wrapper(runner.model) \
        else runner.model


@HOOKS.register_module()
class RankStateDumpHook(Hook):
    """Each process writes its own state to ``out_dir/rank{r}.pth``.

    - ``after_train``: the model's state dict, the optimizer's state dict and
      the paths under the work dir that this process opened for writing
      (recorded from ``before_run`` on);
    - at the iterations ``at_iters`` (1-based, global): the soft-label bank's
      per-process running sums and counts, in ``rank{r}_iter{n}.pth``.
    """

    priority = 'LOWEST'

    def __init__(self, out_dir, at_iters=()):
        self.out_dir = out_dir
        self.at_iters = set(at_iters)
        self.writes = []

    def before_run(self, runner):
        os.makedirs(self.out_dir, exist_ok=True)
        work_dir = osp.abspath(runner.work_dir)
        original = builtins.open
        writes = self.writes

        def recording_open(file, mode='r', *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and any(
                    c in mode for c in 'wax+'):
                path = osp.abspath(os.fsdecode(file))
                if path.startswith(work_dir):
                    writes.append(path)
            return original(file, mode, *args, **kwargs)

        builtins.open = recording_open

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        n = runner.iter + 1
        if n not in self.at_iters:
            return
        bank = _model(runner).soft_label_bank
        path = osp.join(self.out_dir, f'rank{dist.get_rank()}_iter{n}.pth')
        torch.save(dict(sums=bank.sums.clone(), counts=bank.counts.clone()),
                   path)

    def after_train(self, runner):
        torch.save(
            dict(state_dict=_model(runner).state_dict(),
                 optimizer=runner.optim_wrapper.state_dict(),
                 writes=list(self.writes)),
            osp.join(self.out_dir, f'rank{dist.get_rank()}.pth'))


@HOOKS.register_module()
class StallHook(Hook):
    """At (epoch, iteration in epoch), both 1-based, write ``marker`` and
    sleep, so that a test can kill the process at a known point."""

    priority = 'LOWEST'

    def __init__(self, epoch, iteration, marker, seconds=120):
        self.epoch, self.iteration = epoch, iteration
        self.marker, self.seconds = marker, seconds

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if (runner.epoch + 1, batch_idx + 1) == (self.epoch, self.iteration):
            with open(self.marker, 'w') as f:
                f.write(str(os.getpid()))
            time.sleep(self.seconds)


@HOOKS.register_module()
class SampleLogHook(Hook):
    """Each process writes ``out_dir/{tag}_rank{r}.json``: for every trained
    iteration, ``[global iteration (1-based), epoch, [sample_idx, ...]]``."""

    priority = 'LOWEST'

    def __init__(self, out_dir, tag):
        self.out_dir, self.tag, self.rows = out_dir, tag, []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        idx = [int(s.sample_idx) for s in data_batch['data_samples']]
        self.rows.append([runner.iter + 1, runner.epoch, idx])

    def after_train(self, runner):
        import json
        os.makedirs(self.out_dir, exist_ok=True)
        path = osp.join(self.out_dir, f'{self.tag}_rank{dist.get_rank()}.json')
        with open(path, 'w') as f:
            json.dump(self.rows, f)
