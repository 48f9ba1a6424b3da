"""Stop (or warn) at the first iteration when binary convs see only x >= 0."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from skd_bnn_mm.models.utils.binary_input_check import arm_binary_input_check


@HOOKS.register_module()
class BinaryInputCheckHook(Hook):
    """Check on the first training forward that no binary conv of the model
    receives only non-negative inputs (e.g. after ``ReLU``), which would make
    every binary activation +1 and the run train to chance.

    The hooks are put on the model before training and removed at the end of
    its first forward: later iterations cost nothing. A resumed run checks
    its first iteration again. See
    :mod:`skd_bnn_mm.models.utils.binary_input_check`.

    Args:
        action (str): ``'error'`` (default) stops the run with the convs, the
            activations before them and the fix; ``'warn'`` logs it and goes
            on.
    """

    priority = 'NORMAL'

    def __init__(self, action: str = 'error') -> None:
        if action not in ('error', 'warn'):
            raise ValueError("BinaryInputCheckHook action must be 'error' or "
                             f"'warn', got {action!r}")
        self.action = action
        self._check = None

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        self._check = arm_binary_input_check(model, action=self.action)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        # a train_step that never calls the model itself ends the check here
        if self._check is not None:
            check, self._check = self._check, None
            check.finish()
            check.remove()
