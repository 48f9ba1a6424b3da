"""Binary ResNet-18 for ImageNet with a shortcut around every conv."""
from typing import Optional, Sequence

import torch.nn as nn
from mmpretrain.registry import MODELS

from .bnn_blocks import (KAIMING_INIT, BiRealBasicBlock,
                         projection_shortcut)
from .bnn_resnet_base import BNNResNetBase


@MODELS.register_module()
class BNNResNet18(BNNResNetBase):
    """Binary ResNet-18 (ImageNet) of IR-Net / SKD-BNN, Bi-Real style.

    Full-precision stem (7x7/2 conv, 64 channels, BN, Hardtanh, 3x3/2
    max-pool), then ``layer1..layer4`` of 2 :class:`BiRealBasicBlock` each
    (64/128/256/512 channels, strides 1/2/2/2): every binary conv has its own
    shortcut. Where the shape changes, unit 1's shortcut (module
    ``downsample``) is a full-precision 1x1 conv with stride 2 + BN, or with
    ``avg_down=True`` a 2x2 average pool, then a 1x1 conv with stride 1 + BN.
    The 16 3x3 convs of the stages are binary.

    Binary-unit outputs (16): ``layer{i}.{j}.act1`` and ``layer{i}.{j}.act2``
    for ``i`` in 1..4, ``j`` in 0..1 (:meth:`unit_names`).

    Parameters (measured): backbone 11,176,512; with ``PoolBNNeck(512)`` and
    ``Linear(512, 1000)`` 11,690,536 (11.7M). ``avg_down`` does not change
    the count.

    Args:
        in_channels: image channels.
        stem_channels: channels of the stem and of ``layer1``.
        avg_down: average-pool before the 1x1 conv of the downsample
            shortcuts instead of striding it.
        conv_cfg: config of the binary convs (``None``: full precision).
        norm_cfg: config of the norm layers.
        out_indices: stages (0..3) whose outputs ``forward`` returns.
        init_cfg: weight init, Kaiming-normal by default.
    """

    block = BiRealBasicBlock
    stem_kernel = 7
    stem_stride = 2
    stem_maxpool = True

    def __init__(self,
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 avg_down: bool = False,
                 conv_cfg: Optional[dict] = dict(type='IRConv2d'),
                 norm_cfg: dict = dict(type='BN'),
                 out_indices: Sequence[int] = (3, ),
                 init_cfg=KAIMING_INIT):
        self.avg_down = avg_down
        c = stem_channels
        super().__init__(
            stage_channels=(c, 2 * c, 4 * c, 8 * c),
            stage_blocks=(2, 2, 2, 2),
            strides=(1, 2, 2, 2),
            in_channels=in_channels,
            stem_channels=stem_channels,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            out_indices=out_indices,
            init_cfg=init_cfg)

    def _make_shortcut(self, in_channels: int, out_channels: int,
                       stride: int) -> nn.Module:
        return projection_shortcut(in_channels, out_channels, stride,
                                   self.norm_cfg, avg_down=self.avg_down)
