"""Per-epoch schedule of the Error Decay Estimator (EDE) of IR-Net."""
import math
from typing import Optional, Tuple

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from skd_bnn_mm.models.layers import IRConv2d


def ede_schedule(epoch: int, max_epochs: int, t_min: float = 1e-3,
                 t_max: float = 10.0) -> Tuple[float, float]:
    """EDE coefficients ``(k, t)`` for ``epoch`` (0-based).

    ``t`` grows log-linearly from ``t_min`` (epoch 0) towards ``t_max``
    (reached at ``epoch == max_epochs``), so the surrogate gradient moves from
    an almost flat identity to a sharp approximation of sign; ``k = max(1/t,
    1)`` keeps the gradient magnitude near 1 while ``t < 1``.
    """
    if max_epochs <= 0:
        raise ValueError(f'max_epochs must be positive, got {max_epochs}')
    epoch = min(max(epoch, 0), max_epochs)
    lo, hi = math.log10(t_min), math.log10(t_max)
    t = 10**(lo + (hi - lo) * epoch / max_epochs)
    return max(1.0 / t, 1.0), t


@HOOKS.register_module()
class EDEHook(Hook):
    """Set ``k, t`` of every :class:`IRConv2d` from the training epoch.

    The state is derived only from ``runner.epoch`` and ``runner.max_epochs``,
    so calling the hook twice, after a resume, or on any number of processes
    gives the same values. It is applied before training (covers resumed
    runs), before every training epoch, and after a checkpoint is loaded
    (from the checkpoint's ``meta['epoch']`` when present, since the runner
    sets its epoch only after that call). ``t`` and ``k`` are logged once per
    epoch and written to the message hub as ``train/ede_t`` / ``train/ede_k``.
    Meant for epoch-based training loops.

    Args:
        t_min (float): ``t`` at epoch 0. Defaults to 1e-3 (SKD-BNN's code;
            IR-Net used 0.1).
        t_max (float): ``t`` at the end of training. Defaults to 10.
    """

    priority = 'NORMAL'

    def __init__(self, t_min: float = 1e-3, t_max: float = 10.0) -> None:
        if not (0 < t_min < t_max):
            raise ValueError(
                f'EDEHook needs 0 < t_min < t_max, got t_min={t_min}, '
                f't_max={t_max}')
        self.t_min = float(t_min)
        self.t_max = float(t_max)
        self._warned = False
        self._logged_epoch: Optional[int] = None

    def before_train(self, runner) -> None:
        self._apply(runner, runner.epoch)

    def before_train_epoch(self, runner) -> None:
        self._apply(runner, runner.epoch)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta') or {}
        self._apply(runner, meta.get('epoch', runner.epoch))

    def _apply(self, runner, epoch: int) -> None:
        max_epochs = runner.max_epochs
        if not max_epochs:  # no training loop (e.g. test only): nothing to do
            return
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        convs = [m for m in model.modules() if isinstance(m, IRConv2d)]
        if not convs:
            if not self._warned:
                runner.logger.warning(
                    'EDEHook: the model has no IRConv2d layer, nothing to '
                    'schedule; remove the hook or binarise the model.')
                self._warned = True
            return
        k, t = ede_schedule(epoch, max_epochs, self.t_min, self.t_max)
        for conv in convs:
            conv.set_ede(k, t)
        message_hub = getattr(runner, 'message_hub', None)
        if message_hub is not None:
            message_hub.update_scalar('train/ede_t', t)
            message_hub.update_scalar('train/ede_k', k)
        if self._logged_epoch != epoch:
            self._logged_epoch = epoch
            runner.logger.info(
                f'EDE epoch {epoch}: t={t:.6g}, k={k:.6g} '
                f'({len(convs)} IRConv2d layers)')
