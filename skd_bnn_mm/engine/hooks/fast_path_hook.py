"""Opt-in speed switches applied to the runner's model."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from ..fast import to_channels_last


@HOOKS.register_module()
class FastPathHook(Hook):
    """Apply the speed switches of :mod:`skd_bnn_mm.engine.fast` to a run.

    ``channels_last=True`` converts the model's 4-D parameters and its image
    batches to the channels-last layout (see
    :func:`~skd_bnn_mm.engine.fast.to_channels_last`): binary convs give
    bitwise the same outputs; full-precision convs and BNs round
    differently, which a binary network amplifies (docs/speed.md). It is
    applied before training, validation and testing,
    after the weights are initialised or loaded (loading copies into the
    converted parameters and keeps their layout); applying it twice is
    harmless. Autocast and ``torch.compile`` are set elsewhere (an
    ``optim_wrapper`` type and ``compile=True`` in the config), see
    docs/speed.md.

    Args:
        channels_last (bool): use the channels-last layout. Defaults to
            False, so that adding the hook changes nothing by itself.
    """

    priority = 'VERY_HIGH'

    def __init__(self, channels_last: bool = False) -> None:
        self.channels_last = bool(channels_last)
        self._warned = False

    def _apply(self, runner) -> None:
        if not self.channels_last:
            return
        model = runner.model
        if is_model_wrapper(model):
            if not self._warned:
                self._warned = True
                runner.logger.warning(
                    'FastPathHook(channels_last=True) on a wrapped '
                    f'({type(model).__name__}) model: the layout changes '
                    'after the wrapper was built, so DDP copies gradients '
                    'between layouts (correct, but slower). It pays off on '
                    'one GPU/CPU process.')
            model = model.module
        to_channels_last(model)

    def before_train(self, runner) -> None:
        self._apply(runner)

    def before_val(self, runner) -> None:
        self._apply(runner)

    def before_test(self, runner) -> None:
        self._apply(runner)
