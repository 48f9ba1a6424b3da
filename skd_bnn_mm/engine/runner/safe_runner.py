"""mmengine's Runner with a strict, explained resume and safe checkpoints."""
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS as ROOT_RUNNERS
from mmengine.runner import Runner
from mmpretrain.registry import RUNNERS

from skd_bnn_mm.utils.atomic_backend import AtomicLocalBackend  # noqa: F401
from skd_bnn_mm.utils.atomic_io import atomic_write_text
from skd_bnn_mm.utils.checkpoint import (CheckpointError,
                                         CorruptCheckpointError)
from skd_bnn_mm.utils.registry_check import (describe_unknown_types,
                                             unknown_types)
from ..hooks.resume_check_hook import ResumeCheckHook
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


@RUNNERS.register_module()
class SafeRunner(Runner):
    """mmengine's Runner made safe for long, multi-process runs.

    - Strict resume: :class:`~skd_bnn_mm.engine.hooks.ResumeCheckHook` is
      one of its default hooks (``default_hooks.resume_check``): a resume
      must restore every key and shape of the model, a loaded checkpoint
      must hold finite values, what mmengine would run or delete unchecked
      is dropped, and the config being run wins over the checkpoint's
      schedule. The runner only says which file it is resuming
      (:attr:`resume_from`).
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
    - A failed save (full disk) says that nothing was removed; with
      :class:`~skd_bnn_mm.engine.hooks.SafeCheckpointHook` older files are
      removed only after the new one is written.
    - ``before_save_checkpoint`` runs on every process: mmengine calls it on
      the main process only, so a hook with a collective there
      (``SoftLabelBankHook`` in mid-epoch checkpoints) would leave the other
      processes waiting in a different collective. Only the main process
      writes files.
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

    def _maybe_compile(self, target: str) -> None:
        super()._maybe_compile(target)
        compile_cfg = self.cfg.get('compile', None)
        # as mmengine: anything but None / False (an empty dict too) compiles
        if target == 'train_step' and compile_cfg not in (None, False):
            from ..fast import keep_optimizer_step_uncompiled
            keep_optimizer_step_uncompiled(self.optim_wrapper)

    #: the file being resumed while ``resume()`` runs, else None: hooks are
    #: handed the checkpoint, not why it is loaded (ResumeCheckHook)
    resume_from = None

    def resume(self, filename, *args, **kwargs):
        self.resume_from = filename
        try:
            super().resume(filename, *args, **kwargs)
        finally:
            self.resume_from = None

    def build_train_loop(self, loop):
        """``by_epoch=True`` builds :class:`SafeEpochBasedTrainLoop`."""
        if isinstance(loop, dict) and 'type' not in loop and \
                loop.get('by_epoch', False):
            loop = dict(loop)
            loop.pop('by_epoch')
            loop['type'] = SafeEpochBasedTrainLoop
        return super().build_train_loop(loop)

    #: default hooks of mmengine itself (it removes those set to None only)
    _MMENGINE_DEFAULT_HOOKS = frozenset({
        'runtime_info', 'timer', 'sampler_seed', 'logger', 'param_scheduler',
        'checkpoint'})

    def register_default_hooks(self, hooks=None) -> None:
        """Adds ``resume_check`` (:class:`ResumeCheckHook`) to mmengine's
        default hooks. ``default_hooks.NAME=None`` also removes the plugin's
        default hooks (``resume_check``, ``finite_loss``, ...); mmengine
        accepts None only for its own names."""
        hooks = {'resume_check': dict(type=ResumeCheckHook), **(hooks or {})}
        hooks = {name: hook for name, hook in hooks.items()
                 if hook is not None or name in self._MMENGINE_DEFAULT_HOOKS}
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
