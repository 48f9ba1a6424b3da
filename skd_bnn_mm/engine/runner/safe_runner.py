"""mmengine's Runner with a strict, explained resume."""
from typing import Dict, List

from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint
from mmpretrain.registry import RUNNERS


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
    """Refuses to resume from a checkpoint of a different model.

    mmengine loads a resume checkpoint non-strictly: a checkpoint from another
    model (another backbone, another ``num_classes``) is partly skipped with a
    warning and the run goes on from a wrong state. A resume must restore
    everything, so here every key and shape must match, and the error says
    which ones differ and what to do. ``load_from`` (fine-tuning) keeps
    mmengine's lenient behaviour.
    """

    _resuming = False

    def resume(self, filename, *args, **kwargs):
        self._resuming = True
        try:
            return super().resume(filename, *args, **kwargs)
        finally:
            self._resuming = False

    def load_checkpoint(self, filename, map_location='cpu', strict=False,
                        revise_keys=[(r'^module.', '')]):
        if not self._resuming:
            return super().load_checkpoint(filename, map_location, strict,
                                           revise_keys)
        checkpoint = _load_checkpoint(filename, map_location=map_location)
        model = self.model.module if is_model_wrapper(self.model) \
            else self.model
        state = checkpoint.get('state_dict', checkpoint)
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
        from mmengine.runner.checkpoint import _load_checkpoint_to_model
        checkpoint = _load_checkpoint_to_model(model, checkpoint, strict=True,
                                               revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint
