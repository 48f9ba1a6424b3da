"""Check a checkpoint before the runner loads it; on a resume, restore this
run exactly and let the config being run win."""
import copy
import os.path as osp
from typing import List

from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.optim.scheduler.param_scheduler import _ParamScheduler
from mmengine.runner import EpochBasedTrainLoop
from mmpretrain.registry import HOOKS

from skd_bnn_mm.utils.checkpoint import (CheckpointError,
                                         state_dict_mismatches,
                                         state_dict_problems)


def _schedulers(runner) -> list:
    scheds = runner.param_schedulers
    if isinstance(scheds, dict):
        scheds = [s for group in scheds.values()
                  for s in (group if isinstance(group, list) else [])]
    return [s for s in scheds or [] if isinstance(s, _ParamScheduler)]


def _optimizers(runner) -> list:
    wrapper = runner.optim_wrapper
    if isinstance(wrapper, OptimWrapperDict):
        return [w.optimizer for w in wrapper.values()]
    if isinstance(wrapper, OptimWrapper):
        return [wrapper.optimizer]
    return []  # not built yet: nothing restored to compare


@HOOKS.register_module()
class ResumeCheckHook(Hook):
    """Refuse a checkpoint that cannot be loaded as asked, before any part of
    it is used (``after_load_checkpoint``, first of all hooks).

    Every load (``load_from``, ``tools/test.py``, a resume): NaN/inf in any
    tensor and negative counters (soft-label bank counts, ``num_updates``,
    BatchNorm's ``num_batches_tracked``) stop the load and name the key.

    A resume (told by :attr:`SafeRunner.resume_from
    <skd_bnn_mm.engine.runner.SafeRunner>`, set while ``resume()`` runs)
    must restore everything:

    - it must be a training checkpoint (``state_dict`` and ``meta``
      epoch/iter) and not lie past the config's ``max_epochs`` /
      ``max_iters`` (nothing would be trained);
    - every key and shape must match the model: mmengine loads a resume
      non-strictly, so a checkpoint of another backbone or ``num_classes``
      would be partly skipped with a warning and the run would go on from a
      wrong state. ``load_from`` (fine-tuning) keeps mmengine's lenient load;
    - what mmengine would act on unchecked is dropped: ``meta['config']``
      (parsed as Python code) and message-hub paths outside this run's
      checkpoint folders (``CheckpointHook`` deletes the previous best
      checkpoint by such a path);
    - the config being run wins: the optimizer's hyper-parameters (``lr``
      when no schedule sets it, ``weight_decay``, ...) and the schedules'
      configuration (``end``, warm-up, base values) are taken as they were
      before the checkpoint was loaded, the restored step is kept, and every
      value that differs from the checkpoint is logged (``before_train``,
      after mmengine restored the optimizer and the schedulers).

    :class:`~skd_bnn_mm.engine.runner.SafeRunner` registers it among its
    default hooks (``default_hooks.resume_check``).
    """

    priority = 'VERY_HIGH'

    #: scheduler state that is progress (restored), not configuration
    PROGRESS_KEYS = frozenset({'last_step', '_global_step', '_last_value',
                               '_get_value_called_within_step', 'verbose'})

    def __init__(self) -> None:
        # (resumed file, the config's schedule state) until before_train
        self._pending = None

    # --- every load -------------------------------------------------------

    def after_load_checkpoint(self, runner, checkpoint) -> None:
        resume_from = getattr(runner, 'resume_from', None)
        filename = resume_from or getattr(runner, '_load_from', None) \
            or 'the checkpoint'
        state = checkpoint.get('state_dict', checkpoint) \
            if isinstance(checkpoint, dict) else None
        problems = state_dict_problems(state) if isinstance(state, dict) \
            else []
        if problems:
            raise CheckpointError(
                f'Cannot load "{filename}": ' + '; '.join(problems) + '. The '
                'run that saved it had probably diverged; use an earlier '
                'checkpoint. Nothing was changed.')
        if resume_from is None:
            return
        self._check_training_checkpoint(checkpoint, filename)
        self._check_progress(runner, checkpoint['meta'], filename)
        self._sanitize(runner, checkpoint, filename)
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        problems = state_dict_mismatches(model.state_dict(), state)
        if problems:
            raise RuntimeError(
                f'Cannot resume from "{filename}": it was saved by a different '
                'model (' + '; '.join(problems) + '). A resume restores the '
                'exact same model; check the config (backbone, num_classes) '
                'or the checkpoint path. To start a new run from these weights '
                'use load_from (fine-tuning) and a new --work-dir; nothing in '
                'the work dir was changed.')
        # optimizer and schedulers are restored after this hook: keep the
        # config's values to put back in before_train
        self._pending = (filename, self._schedule_state(runner))

    @staticmethod
    def _check_training_checkpoint(checkpoint, filename) -> None:
        meta = checkpoint.get('meta') if isinstance(checkpoint, dict) \
            else None
        if not (isinstance(meta, dict) and isinstance(
                checkpoint.get('state_dict'), dict)
                and all(isinstance(meta.get(k), int) and meta[k] >= 0
                        for k in ('epoch', 'iter'))):
            raise CheckpointError(
                f'Cannot resume from "{filename}": it is not a training '
                'checkpoint of this project (a dict with state_dict and meta '
                'epoch/iter). To start a new run from its weights use '
                'load_from and a new --work-dir; nothing in the work dir was '
                'changed.')

    @staticmethod
    def _check_progress(runner, meta, filename) -> None:
        loop = runner._train_loop  # a dict until built: nothing to check
        by_epoch = isinstance(loop, EpochBasedTrainLoop)
        done, limit, unit = (
            (meta['epoch'], getattr(loop, 'max_epochs', None), 'epoch')
            if by_epoch else
            (meta['iter'], getattr(loop, 'max_iters', None), 'iteration'))
        if not isinstance(limit, int):
            return
        if done > limit:
            raise CheckpointError(
                f'Cannot resume from "{filename}": it was saved at {unit} '
                f'{done}, past the config\'s {limit} ({unit}s of '
                'train_cfg); nothing would be trained. To train longer, raise '
                f'train_cfg.max_{unit}s above {done}; to evaluate it use '
                'tools/test.py. Nothing was changed.')
        if done == limit:
            runner.logger.warning(
                f'"{filename}" was saved at the last {unit} ({done}) of the '
                'config: training is complete, nothing is trained. Raise '
                f'train_cfg.max_{unit}s to train longer.')

    @staticmethod
    def _own_dirs(runner) -> List[str]:
        """Folders this run writes checkpoints to."""
        dirs = [runner.work_dir]
        for hook in runner.hooks:
            out_dir = getattr(hook, 'out_dir', None)
            if isinstance(hook, CheckpointHook) and isinstance(out_dir, str):
                dirs += [out_dir, osp.join(out_dir, osp.basename(
                    osp.normpath(runner.work_dir)))]
        return [osp.realpath(d) if '://' not in d else d for d in dirs]

    def _sanitize(self, runner, checkpoint: dict, filename: str) -> None:
        meta = checkpoint['meta']
        if 'config' in meta:  # mmengine writes meta['cfg']; never needed
            meta.pop('config')
            runner.logger.warning(
                f'Ignored meta["config"] of "{filename}": mmengine would run '
                'it as Python code.')
        hub = checkpoint.get('message_hub')
        runtime = hub.get('runtime_info') if isinstance(hub, dict) else None
        if not isinstance(runtime, dict):
            return
        dirs = self._own_dirs(runner)

        def inside(path) -> bool:
            if not isinstance(path, str):
                return False
            if '://' in path:
                return any(path.startswith(d.rstrip('/') + '/') for d in dirs)
            real = osp.realpath(path)
            return any(real.startswith(d.rstrip(osp.sep) + osp.sep)
                       for d in dirs if '://' not in d)

        for key in list(runtime):
            value = runtime[key]
            if (key == 'last_ckpt' or key.startswith('best_ckpt')) \
                    and not inside(value):
                runtime.pop(key)
                runner.logger.warning(
                    f'Ignored {key}={value!r} of "{filename}": not in this '
                    f'run\'s checkpoint folders {dirs} (CheckpointHook '
                    'deletes the previous best checkpoint by such a path).')
            elif key == 'keep_ckpt_ids' and not (
                    isinstance(value, (list, tuple))
                    and all(type(v) is int for v in value)):
                runtime.pop(key)
                runner.logger.warning(
                    f'Ignored keep_ckpt_ids={value!r} of "{filename}": not a '
                    'list of step numbers.')

    # --- the config's schedule wins on resume -----------------------------

    @staticmethod
    def _schedule_state(runner):
        # a scheduled lr follows from initial_lr and the restored step
        groups = [[{k: copy.deepcopy(v) for k, v in g.items()
                    if k != 'params' and not (k == 'lr' and 'initial_lr' in g)}
                   for g in opt.param_groups]
                  for opt in _optimizers(runner)]
        scheds = [copy.deepcopy(s.state_dict()) for s in _schedulers(runner)]
        return groups, scheds

    def before_train(self, runner) -> None:
        if self._pending is None:
            return
        (filename, (groups, scheds)), self._pending = self._pending, None
        changes = []
        for opt, config_groups in zip(_optimizers(runner), groups):
            for i, (group, ref) in enumerate(zip(opt.param_groups,
                                                 config_groups)):
                for key, value in ref.items():
                    if key in group and group[key] != value:
                        changes.append(f'optimizer group {i} {key}: '
                                       f'{group[key]} -> {value}')
                        group[key] = value
        schedulers = _schedulers(runner)
        for i, (sched, ref) in enumerate(zip(schedulers, scheds)):
            for key, value in ref.items():
                if key in self.PROGRESS_KEYS:
                    continue
                old = getattr(sched, key, None)
                if old != value:
                    changes.append(f'param_scheduler {i} '
                                   f'({type(sched).__name__}) {key}: {old} '
                                   f'-> {value}')
                    setattr(sched, key, value)
        if not changes:
            return
        for sched in schedulers:
            closed = getattr(sched, '_get_closed_form', None)
            if closed is None and type(sched).__name__ == 'WarmupCosineLR':
                closed = sched._get_value  # closed form by construction
            if closed is None or not (
                    sched.begin <= sched._global_step < sched.end):
                continue
            # a schedule that had ended stopped counting its steps
            sched.last_step = sched._global_step - sched.begin
            values = closed()
            for group, value in zip(sched.optimizer.param_groups, values):
                group[sched.param_name] = value
            sched._last_value = values
        runner.logger.warning(
            f'Resumed from "{filename}" with a config that differs from the '
            'checkpoint; the config\'s values are used from the restored step '
            'on: ' + '; '.join(changes))
