"""The paper's per-epoch linear warm-up followed by cosine decay to zero."""
import math

from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler
from mmpretrain.registry import PARAM_SCHEDULERS


def warmup_cosine_factor(epoch: int, warmup: int, total: int) -> float:
    """Multiplier of the base value at ``epoch`` (0-based).

    ``(e + 1) / (w + 1)`` for ``e <= w``, then
    ``0.5 * (1 + cos(pi * (e - w) / (E - w)))``: the last warm-up epoch
    already runs at the full value, and the value reaches 0 at ``e = E``.
    """
    if epoch <= warmup:
        return (epoch + 1) / (warmup + 1)
    return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (total - warmup)))


@PARAM_SCHEDULERS.register_module()
class WarmupCosineLR(LRSchedulerMixin, _ParamScheduler):
    """Warm-up + cosine learning rate, stepped once per epoch.

    Written in closed form (each value from the base value and the epoch),
    so nothing drifts over hundreds of epochs and a resumed run gets exactly
    the value an uninterrupted one would. Chaining mmengine's ``LinearLR``
    and ``CosineAnnealingLR`` gives the same curve recursively.

    Args:
        warmup (int): Warm-up epochs ``w`` (0 disables warm-up).
        begin (int): First epoch of the schedule. Defaults to 0.
        end (int): Epoch at which the value reaches 0; set it to
            ``max_epochs`` (``E``).
    """

    def __init__(self, optimizer, warmup: int = 0, begin: int = 0,
                 end: int = INF, last_step: int = -1, by_epoch: bool = True,
                 verbose: bool = False):
        if end == INF:
            raise ValueError('WarmupCosineLR needs `end` (the epoch at which '
                             'the learning rate reaches 0, usually '
                             'max_epochs).')
        if not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f'warmup must be a non-negative integer number '
                             f'of epochs, got {warmup!r}')
        if warmup >= end - begin:
            # the usual cause: a shortened train_cfg.max_epochs (mmengine
            # sets `end` to it) with the recipe's warm-up
            longest = max(0, end - begin - 1)
            raise ValueError(
                f'WarmupCosineLR: param_scheduler.warmup={warmup} epochs '
                f'must be shorter than the schedule (end - begin = '
                f'{end - begin} epochs; end defaults to '
                'train_cfg.max_epochs). Shorten the warm-up, e.g. '
                f'--cfg-options param_scheduler.warmup={longest} (0 '
                'disables it), or train for more epochs.')
        if not by_epoch:
            raise ValueError('WarmupCosineLR follows the paper and steps per '
                             'epoch: keep by_epoch=True.')
        self.warmup = warmup
        self.total = end - begin
        super().__init__(optimizer, begin=begin, end=end,
                         last_step=last_step, by_epoch=by_epoch,
                         verbose=verbose)

    @classmethod
    def build_iter_from_epoch(cls, *args, **kwargs):
        raise ValueError('WarmupCosineLR is defined per epoch; remove '
                         '`convert_to_iter_based=True`.')

    def load_state_dict(self, state_dict):
        """Restore the step and re-apply its value.

        Building a scheduler steps it once (to epoch 0's value), which on
        resume overwrites the learning rate the optimizer state restored; the
        closed form gives back the exact value of the restored step.
        """
        super().load_state_dict(state_dict)
        if self.begin <= self._global_step < self.end:
            for group, value in zip(self.optimizer.param_groups,
                                    self._get_value()):
                group[self.param_name] = value

    def _get_value(self):
        factor = warmup_cosine_factor(self.last_step, self.warmup, self.total)
        return [base * factor for base in self.base_values]
