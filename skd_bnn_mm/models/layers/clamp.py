"""``Clamp`` for ``act_cfg`` that also works inside mmcv's ``ConvModule``.

mmcv's ``Clamp(min, max)`` takes no ``inplace`` argument, while
``ConvModule`` adds ``inplace`` to every ``act_cfg`` but a few types, so
``ConvModule(..., act_cfg=dict(type='Clamp'))`` raises ``TypeError``. This
``Clamp`` has mmcv's arguments and defaults (``min=-1``, ``max=1``) plus
``inplace``, and is registered in mmpretrain's registry, where it takes
precedence over mmcv's under the ``mmpretrain`` scope (configs of this
project). It is a ``Hardtanh`` with mmcv's argument names.
"""
import torch.nn as nn
from mmpretrain.registry import MODELS


@MODELS.register_module()
class Clamp(nn.Hardtanh):
    """Clip to ``[min, max]``.

    Args:
        min (float): lower bound. Defaults to -1.
        max (float): upper bound. Defaults to 1.
        inplace (bool): clip the input tensor itself.
    """

    def __init__(self, min: float = -1., max: float = 1.,
                 inplace: bool = False) -> None:
        super().__init__(min_val=min, max_val=max, inplace=inplace)

    @property
    def min(self) -> float:
        return self.min_val

    @property
    def max(self) -> float:
        return self.max_val
