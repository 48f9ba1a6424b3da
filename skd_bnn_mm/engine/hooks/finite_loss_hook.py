"""Stop training at the first non-finite or exploding loss."""
import math
from typing import Optional

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

#: likely causes per loss part; the generic advice follows them
CAUSES = {
    'loss_feat': (
        'loss_feat (channel/spatial self-distillation) compares normalised '
        'feature maps: dead or all-equal features (e.g. binary convs right '
        'after a ReLU/ReLU6, whose inputs are never negative, so every sign '
        'is +1 - put a Hardtanh or no activation before them), or a unit '
        'list that records a constant layer'),
    'loss_label': (
        'loss_label (KL to the soft-label bank): a non-finite or huge bank '
        '(check the soft_label_bank buffers of the checkpoint you started '
        'from), a temperature near 0, or logits that overflow'),
    'loss_cluster': (
        'loss_cluster (label clustering of the penultimate features): '
        'features that grow without bound or collapse to one point; lower '
        'its loss_weight'),
    'loss_cls': (
        'loss_cls (cross-entropy): logits that overflow, i.e. a learning '
        'rate or loss_weight far too high, or non-finite input images'),
    'loss': (
        'loss (the head\'s loss; in a model without distillation the '
        'cross-entropy): logits that overflow, i.e. a learning rate or '
        'loss_weight far too high, or non-finite input images'),
}
GENERIC = ('Lower the learning rate (optim_wrapper.optimizer.lr) or that '
           "loss's loss_weight, check the data, and resume from an earlier "
           'checkpoint (the checkpoints saved before this iteration are '
           'untouched; nothing was saved after it).')


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Raise at the first training iteration whose loss is not usable.

    After every iteration the logged loss parts (the floats mmengine's
    ``RuntimeInfoHook`` has just copied to the host, so no extra device
    sync) are checked; a part that is NaN/inf, or larger than ``max_loss``
    in magnitude (a loss that explodes before it turns NaN), stops training
    with a :class:`FloatingPointError` that names the part, the epoch and
    the iteration and lists the likely causes of that part. The priority
    puts the check before ``CheckpointHook``, so nothing is saved after the
    step that produced it (that step has been applied to the weights in
    memory only).

    It is in every config (``default_hooks.finite_loss``); a second instance
    (an older config listing it in ``custom_hooks``) does nothing.

    Args:
        max_loss (float): largest accepted magnitude of a loss part; ``inf``
            checks finiteness only.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, max_loss: float = 1e5) -> None:
        if not (isinstance(max_loss, (int, float)) and max_loss > 0):
            raise ValueError(f'FiniteLossHook: max_loss must be a positive '
                             f'number, got {max_loss!r}')
        self.max_loss = float(max_loss)
        self._active = True

    def before_run(self, runner) -> None:
        first = next(h for h in runner.hooks if isinstance(h, FiniteLossHook))
        self._active = first is self

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if not (self._active and outputs):
            return
        scalars = runner.message_hub.log_scalars
        keys = [k for k in outputs if 'loss' in k]
        # the parts first, so that the message names the culprit
        for key in sorted(keys, key=lambda k: k == 'loss'):
            buffer = scalars.get(f'train/{key}')
            if buffer is None:
                continue
            value = buffer.current()
            if math.isfinite(value) and abs(value) <= self.max_loss:
                continue
            what = (f'is {value}' if not math.isfinite(value) else
                    f'is {value:.4g}, above max_loss={self.max_loss:g} '
                    '(exploding)')
            causes = CAUSES.get(key, f'{key}: see the loss module that '
                                'returns it')
            raise FloatingPointError(
                f'{key} {what} at epoch {runner.epoch + 1}, iteration '
                f'{runner.iter + 1}; training stopped. Likely causes: '
                f'{causes}. {GENERIC} If such values are expected, raise '
                'default_hooks.finite_loss.max_loss.')
