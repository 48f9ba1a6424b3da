"""mmengine's Runner with a strict, explained resume and safe checkpoints."""
import os.path as osp
from typing import Dict, List

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.optim.scheduler.param_scheduler import _ParamScheduler
from mmengine.registry import RUNNERS as ROOT_RUNNERS
from mmengine.runner import EpochBasedTrainLoop, Runner
from mmengine.runner.checkpoint import _load_checkpoint
from mmpretrain.registry import RUNNERS

from skd_bnn_mm.utils.atomic_backend import AtomicLocalBackend  # noqa: F401
from skd_bnn_mm.utils.atomic_io import atomic_write_text
from skd_bnn_mm.utils.checkpoint import (CheckpointError,
                                         CorruptCheckpointError,
                                         state_dict_problems)
from skd_bnn_mm.utils.registry_check import (describe_unknown_types,
                                             unknown_types)
from .checkpoint_files import POINTER, other_checkpoints, resume_candidates
from .safe_loops import SafeEpochBasedTrainLoop


class UnknownTypeError(KeyError):
    """A config ``type`` that no registry knows (message printed as is)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


def _is_local(filename: str, file_client_args=None,
              backend_args=None) -> bool:
    if file_client_args is not None or '://' in str(filename):
        return False
    try:
        return isinstance(
            get_file_backend(filename, backend_args=backend_args),
            LocalBackend)
    except Exception:  # unknown backend: leave it to mmengine
        return False


def state_dict_mismatches(model_state: Dict, ckpt_state: Dict,
                          limit: int = 8) -> List[str]:
    """Human-readable differences between two state dicts (keys and shapes)."""
    ckpt_state = {k[len('module.'):] if k.startswith('module.') else k: v
                  for k, v in ckpt_state.items()}
    problems = []
    for key, value in model_state.items():
        if key not in ckpt_state:
            problems.append(f'missing in checkpoint: {key}')
        elif tuple(ckpt_state[key].shape) != tuple(value.shape):
            problems.append(
                f'{key}: checkpoint {tuple(ckpt_state[key].shape)} vs model '
                f'{tuple(value.shape)}')
    problems += [f'not in model: {key}' for key in ckpt_state
                 if key not in model_state]
    if len(problems) > limit:
        problems = problems[:limit] + [f'... and {len(problems) - limit} more']
    return problems


@RUNNERS.register_module()
class SafeRunner(Runner):
    """mmengine's Runner made safe for long, multi-process runs.

    - Strict resume: mmengine loads a resume checkpoint non-strictly, so a
      checkpoint from another model (another backbone, another
      ``num_classes``) is partly skipped with a warning and the run goes on
      from a wrong state. A resume must restore everything, so here every key
      and shape must match, and the error says which ones differ and what to
      do. ``load_from`` (fine-tuning) keeps mmengine's lenient behaviour.
    - Atomic checkpoints: local checkpoint files (through the
      ``atomic_local`` file backend, :class:`AtomicLocalBackend`) and the
      ``last_checkpoint`` pointer are written to a temporary file, fsync-ed
      and renamed, so a kill during a save never leaves a truncated file
      under a checkpoint name.
    - Robust automatic resume (``--resume`` without a path): the pointer is
      not trusted blindly. If it is missing, empty or names a missing file,
      the newest checkpoint of the work dir is used; if the chosen file is
      truncated or corrupt, the next older one is tried, with a warning that
      names the skipped file (left in place). A file refused as unsafe, or a
      checkpoint of another model, stops the run instead. It never starts
      over silently: if no checkpoint can be read, or the pointer names a
      missing file and nothing else is there, or the work dir holds only
      other ``.pth`` files (``best_*``), the run stops with what to do.
      With ``resume='auto'`` (``tools/train.py --resume`` without a path)
      and the config's ``load_from`` set, a work dir without checkpoints
      starts from ``load_from`` as the config says (weights only); once
      the work dir has checkpoints, they are resumed.
    - The config being run wins on resume: the learning-rate schedule
      (``end``, warm-up, base values) and the optimizer's hyper-parameters
      (``lr``, ``weight_decay``, ...) are taken from the config, the
      restored step is kept, and every value that differs from the
      checkpoint is logged as a warning. EDE follows the same
      ``max_epochs``. A checkpoint past ``max_epochs`` is refused.
    - Loaded state is checked: NaN/inf in any tensor, negative counters
      (soft-label bank counts, ``num_updates``, BatchNorm's
      ``num_batches_tracked``) stop the load and name the key.
    - A failed save (full disk) says that nothing was removed; with
      :class:`~skd_bnn_mm.engine.hooks.SafeCheckpointHook` older files are
      removed only after the new one is written.
    - ``before_save_checkpoint`` runs on every process: mmengine calls it on
      the main process only, so a hook with a collective there
      (``SoftLabelBankHook`` in mid-epoch checkpoints) would leave the other
      processes waiting in a different collective. Only the main process
      writes files.
    - A resumed file is checked, not trusted: it must be a training
      checkpoint; its ``meta['config']`` (which mmengine would run as Python)
      is dropped, and so are message-hub paths outside this run's checkpoint
      folders (which mmengine's ``CheckpointHook`` would delete).
    - Resuming from a checkpoint taken in the middle of an epoch continues
      that epoch where it stopped (:class:`SafeEpochBasedTrainLoop`, named in
      the configs' ``train_cfg`` and also used for
      ``train_cfg=dict(by_epoch=True)``), rather than training its first
      batches twice.
    - Registered in mmengine's root ``RUNNERS`` too, so tools that build
      ``RUNNERS.build(cfg)`` from mmengine (mmpretrain's ``tools/train.py``,
      ``tools/test.py``, ``mim``) find it under any default scope.
    - A misspelt ``type`` in the model config is reported with its place in
      the config and the closest registered names.
    - With ``compile`` set, the optimizer step is left uncompiled: torch
      guards the float learning rate of a compiled step, so every new value
      of a schedule would recompile it (up to dynamo's cache limit, minutes
      of compilation in a long run) for a step that is a few fused
      ``foreach`` kernels anyway.
    """

    _resuming = False

    def _maybe_compile(self, target: str) -> None:
        super()._maybe_compile(target)
        compile_cfg = self.cfg.get('compile', None)
        # as mmengine: anything but None / False (an empty dict too) compiles
        if target == 'train_step' and compile_cfg not in (None, False):
            from ..fast import keep_optimizer_step_uncompiled
            keep_optimizer_step_uncompiled(self.optim_wrapper)

    def resume(self, filename, *args, **kwargs):
        fresh = self._schedule_state()
        self._resuming = True
        try:
            super().resume(filename, *args, **kwargs)
        finally:
            self._resuming = False
        self._apply_config_schedule(fresh, filename)

    # --- the config's schedule wins on resume ---------------------------

    #: scheduler state that is progress (restored), not configuration
    _PROGRESS_KEYS = frozenset({'last_step', '_global_step', '_last_value',
                                '_get_value_called_within_step', 'verbose'})

    def _schedulers(self) -> list:
        scheds = self.param_schedulers
        if isinstance(scheds, dict):
            scheds = [s for group in scheds.values()
                      for s in (group if isinstance(group, list) else [])]
        return [s for s in scheds or [] if isinstance(s, _ParamScheduler)]

    def _optimizers(self) -> list:
        wrapper = self.optim_wrapper
        if isinstance(wrapper, OptimWrapperDict):
            return [w.optimizer for w in wrapper.values()]
        if isinstance(wrapper, OptimWrapper):
            return [wrapper.optimizer]
        return []  # not built yet: nothing restored to compare

    def _schedule_state(self):
        import copy
        groups = [[{k: copy.deepcopy(v) for k, v in g.items()
                    if k not in ('params', 'lr')} for g in opt.param_groups]
                  for opt in self._optimizers()]
        scheds = [copy.deepcopy(s.state_dict()) for s in self._schedulers()]
        return groups, scheds

    def _apply_config_schedule(self, fresh, filename) -> None:
        groups, scheds = fresh
        changes = []
        for opt, fresh_groups in zip(self._optimizers(), groups):
            for i, (group, ref) in enumerate(zip(opt.param_groups,
                                                 fresh_groups)):
                for key, value in ref.items():
                    if key in group and group[key] != value:
                        changes.append(f'optimizer group {i} {key}: '
                                       f'{group[key]} -> {value}')
                        group[key] = value
        schedulers = self._schedulers()
        for i, (sched, ref) in enumerate(zip(schedulers, scheds)):
            for key, value in ref.items():
                if key in self._PROGRESS_KEYS:
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
        self.logger.warning(
            f'Resumed from "{filename}" with a config that differs from the '
            'checkpoint; the config\'s values are used from the restored step '
            'on: ' + '; '.join(changes))

    def build_train_loop(self, loop):
        """``by_epoch=True`` builds :class:`SafeEpochBasedTrainLoop`."""
        if isinstance(loop, dict) and 'type' not in loop and \
                loop.get('by_epoch', False):
            loop = dict(loop)
            loop.pop('by_epoch')
            loop['type'] = SafeEpochBasedTrainLoop
        return super().build_train_loop(loop)

    def load_checkpoint(self, filename, map_location='cpu', strict=False,
                        revise_keys=[(r'^module.', '')]):
        checkpoint = _load_checkpoint(filename, map_location=map_location)
        state = checkpoint.get('state_dict', checkpoint) \
            if isinstance(checkpoint, dict) else None
        problems = state_dict_problems(state) if isinstance(state, dict) \
            else []
        if problems:
            raise CheckpointError(
                f'Cannot load "{filename}": ' + '; '.join(problems) + '. The '
                'run that saved it had probably diverged; use an earlier '
                'checkpoint. Nothing was changed.')
        from mmengine.runner.checkpoint import _load_checkpoint_to_model
        model = self.model.module if is_model_wrapper(self.model) \
            else self.model
        if not self._resuming:  # load_from: mmengine's lenient load
            self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
            checkpoint = _load_checkpoint_to_model(
                model, checkpoint, strict, revise_keys=revise_keys)
            self._has_loaded = True
            self.logger.info(f'Load checkpoint from {filename}')
            return checkpoint
        self._check_training_checkpoint(checkpoint, filename)
        self._check_progress(checkpoint, filename)
        self._sanitize_resumed(checkpoint, filename)
        problems = state_dict_mismatches(model.state_dict(), state)
        if problems:
            raise RuntimeError(
                f'Cannot resume from "{filename}": it was saved by a different '
                'model (' + '; '.join(problems) + '). A resume restores the '
                'exact same model; check the config (backbone, num_classes) '
                'or the checkpoint path. To start a new run from these weights '
                'use load_from (fine-tuning) and a new --work-dir; nothing in '
                'the work dir was changed.')
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        checkpoint = _load_checkpoint_to_model(model, checkpoint, strict=True,
                                               revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

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

    def _check_progress(self, checkpoint, filename) -> None:
        """Refuse a checkpoint past the end of the configured training."""
        meta = checkpoint['meta']
        loop = self._train_loop
        max_epochs = getattr(loop, 'max_epochs', None)
        max_iters = getattr(loop, 'max_iters', None)
        by_epoch = isinstance(loop, EpochBasedTrainLoop)
        done, limit, unit = ((meta['epoch'], max_epochs, 'epoch') if by_epoch
                             else (meta['iter'], max_iters, 'iteration'))
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
            self.logger.warning(
                f'"{filename}" was saved at the last {unit} ({done}) of the '
                'config: training is complete, nothing is trained. Raise '
                f'train_cfg.max_{unit}s to train longer.')

    def _own_dirs(self) -> List[str]:
        """Folders this run writes checkpoints to."""
        dirs = [self.work_dir]
        for hook in self.hooks:
            out_dir = getattr(hook, 'out_dir', None)
            if isinstance(hook, CheckpointHook) and isinstance(out_dir, str):
                dirs += [out_dir, osp.join(out_dir, osp.basename(
                    osp.normpath(self.work_dir)))]
        return [osp.realpath(d) if '://' not in d else d for d in dirs]

    def _sanitize_resumed(self, checkpoint: dict, filename: str) -> None:
        """Drop what mmengine would act on unchecked in a resumed file.

        - ``meta['config']``: mmengine parses it with ``Config.fromstring``,
          i.e. runs it as Python (only to compare GPU counts); mmengine
          itself writes ``meta['cfg']``, so this is never needed.
        - paths in the message hub (``best_ckpt*``, ``last_ckpt``):
          ``CheckpointHook`` deletes the previous best checkpoint by this
          path when a better one is saved, so a path outside this run's
          checkpoint folders (a crafted file, or a checkpoint copied from
          another run) would delete a file elsewhere; ``keep_ckpt_ids``
          must be step numbers.
        """
        meta = checkpoint['meta']
        if 'config' in meta:
            meta.pop('config')
            self.logger.warning(
                f'Ignored meta["config"] of "{filename}": mmengine would run '
                'it as Python code.')
        hub = checkpoint.get('message_hub')
        runtime = hub.get('runtime_info') if isinstance(hub, dict) else None
        if not isinstance(runtime, dict):
            return
        dirs = self._own_dirs()

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
                self.logger.warning(
                    f'Ignored {key}={value!r} of "{filename}": not in this '
                    f'run\'s checkpoint folders {dirs} (CheckpointHook '
                    'deletes the previous best checkpoint by such a path).')
            elif key == 'keep_ckpt_ids' and not (
                    isinstance(value, (list, tuple))
                    and all(type(v) is int for v in value)):
                runtime.pop(key)
                self.logger.warning(
                    f'Ignored keep_ckpt_ids={value!r} of "{filename}": not a '
                    'list of step numbers.')

    #: default hooks of mmengine itself (it removes those set to None only)
    _MMENGINE_DEFAULT_HOOKS = frozenset({
        'runtime_info', 'timer', 'sampler_seed', 'logger', 'param_scheduler',
        'checkpoint'})

    def register_default_hooks(self, hooks=None) -> None:
        """``default_hooks.NAME=None`` also removes the plugin's default
        hooks (``finite_loss``, ``rank_consistency``, ``setup_check``);
        mmengine accepts None only for its own names."""
        if hooks is not None:
            hooks = {name: hook for name, hook in hooks.items()
                     if hook is not None
                     or name in self._MMENGINE_DEFAULT_HOOKS}
        super().register_default_hooks(hooks)

    # --- model building -------------------------------------------------

    def build_model(self, model):
        try:
            return super().build_model(model)
        except KeyError as e:
            if not isinstance(model, dict):
                raise
            from mmpretrain.registry import MODELS
            items = unknown_types(model, MODELS)
            if not items:
                raise
            raise UnknownTypeError(
                'Cannot build the model: '
                + describe_unknown_types(items, 'model.')
                + '\nRegistered model types are listed by '
                '`python -c "import skd_bnn_mm; from mmpretrain.registry '
                'import MODELS; print(sorted(MODELS.module_dict))"`.') from e

    # --- saving ---------------------------------------------------------

    def save_checkpoint(self, out_dir, filename, file_client_args=None,
                        save_optimizer=True, save_param_scheduler=True,
                        meta=None, by_epoch=True, backend_args=None):
        if not is_main_process():
            # match the collectives of the main process's hooks; write nothing
            model = self.model.module if is_model_wrapper(self.model) \
                else self.model
            checkpoint = dict(meta=dict(meta or {}),
                              state_dict=model.state_dict())
            self.call_hook('before_save_checkpoint', checkpoint=checkpoint)
            return
        filepath = osp.join(out_dir, filename)
        if _is_local(filepath, file_client_args, backend_args):
            # mmengine writes through the file backend: an atomic one
            backend_args = dict(backend_args or {}, backend='atomic_local')
        try:
            super().save_checkpoint(
                out_dir, filename, file_client_args=file_client_args,
                save_optimizer=save_optimizer,
                save_param_scheduler=save_param_scheduler, meta=meta,
                by_epoch=by_epoch, backend_args=backend_args)
        except OSError as e:
            pointer = osp.join(self.work_dir, POINTER)
            raise OSError(
                e.errno,
                f'Could not write checkpoint "{filepath}" ({e.strerror or e}).'
                ' Nothing was removed: the earlier checkpoints and '
                f'"{pointer}" are as they were before this save. Free disk '
                'space (or set another work dir / CheckpointHook out_dir) '
                'and continue with --resume.') from e
        # CheckpointHook announces the file it will point last_checkpoint at
        # before saving; write the pointer atomically now. (The hook then
        # rewrites the same text in place; if that is interrupted, the
        # automatic resume falls back to scanning the work dir.)
        if (_is_local(filepath, file_client_args)
                and self.message_hub.get_info('last_ckpt') == filepath):
            atomic_write_text(osp.join(self.work_dir, POINTER), filepath)

    # --- automatic resume -----------------------------------------------

    def _checkpoint_name_templates(self):
        tmpls, dirs = [], []
        for hook in self.hooks:
            if isinstance(hook, CheckpointHook):
                tmpls.append(hook.filename_tmpl)
                out_dir = hook.out_dir
                if isinstance(out_dir, str) and '://' not in out_dir:
                    dirs.append(osp.join(out_dir, osp.basename(
                        osp.normpath(self.work_dir))))
        return tmpls or ['epoch_{}.pth', 'iter_{}.pth'], dirs

    def load_or_resume(self) -> None:
        auto = self._resume == 'auto' or (self._resume
                                          and self._load_from is None)
        if self._has_loaded or not auto:
            return super().load_or_resume()
        tmpls, dirs = self._checkpoint_name_templates()
        candidates, notes = resume_candidates(self.work_dir, tmpls, dirs)
        for note in notes:
            self.logger.warning(f'Automatic resume: {note}; looking for '
                                'checkpoints in the work dir instead.')
        if not candidates:
            others = other_checkpoints(self.work_dir)
            if notes or others:
                raise CheckpointError(
                    'Automatic resume: ' + '; '.join(notes + (
                        [f'the work dir holds only {others}, which are not '
                         'checkpoints of the CheckpointHook\'s name pattern']
                        if others else [])) + f'. Not starting over in '
                    f'"{self.work_dir}" (it would overwrite them). Resume '
                    'from a file with --resume PATH, or train from scratch '
                    'with a new --work-dir; nothing was changed.')
            if self._load_from is not None:
                self.logger.warning(
                    f'Automatic resume: no checkpoint in "{self.work_dir}"; '
                    f'starting from the config\'s load_from '
                    f'"{self._load_from}" (weights only, a new run).')
                self.load_checkpoint(self._load_from)
                self._has_loaded = True
                return None
            self.logger.warning(f'Automatic resume: no checkpoint in '
                                f'"{self.work_dir}"; training starts from '
                                'scratch.')
            return None
        skipped = []
        for path in candidates:
            try:
                self.resume(path)
            except CorruptCheckpointError as e:
                skipped.append(path)
                self.logger.warning(
                    f'Automatic resume: skipping unreadable checkpoint '
                    f'"{path}" (left in place for inspection): {e}')
                continue
            self._has_loaded = True
            if skipped:
                self.logger.warning(
                    f'Automatic resume: resumed from "{path}", older than '
                    f'the unreadable {skipped}; the epochs after it are '
                    'trained again.')
            else:
                self.logger.info(f'Automatic resume from "{path}".')
            return None
        raise CorruptCheckpointError(
            f'Automatic resume: none of the checkpoints of "{self.work_dir}" '
            f'can be read ({", ".join(skipped)}); nothing was changed. Pass '
            'an intact checkpoint with --resume PATH, or train from scratch '
            'with a new --work-dir.')


# found by mmengine's root registry too (mmpretrain's tools, mim), whatever
# the default scope
if 'SafeRunner' not in ROOT_RUNNERS.module_dict:
    ROOT_RUNNERS.register_module(module=SafeRunner)
