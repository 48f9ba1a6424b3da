"""Binary ResNet-18 for CIFAR with one shortcut per block."""
from typing import Optional, Sequence

import torch.nn as nn
from mmpretrain.registry import MODELS

from .bnn_blocks import KAIMING_INIT, BasicBlock, projection_shortcut
from .bnn_resnet_base import BNNResNetBase


@MODELS.register_module()
class BNNResNet18CIFAR(BNNResNetBase):
    """Binary ResNet-18 (CIFAR) of IR-Net / SKD-BNN.

    Full-precision stem (3x3 conv, 64 channels, BN, Hardtanh, no max-pool),
    then ``layer1..layer4`` of 2 :class:`BasicBlock` each (64/128/256/512
    channels, strides 1/2/2/2), one shortcut around both convs of a block.
    Where the shape changes the shortcut (module ``downsample``) is a
    full-precision 1x1 conv with stride 2 + BN; the 16 3x3 convs of the
    stages are binary.

    Binary-unit outputs (16): ``layer{i}.{j}.act1`` and ``layer{i}.{j}.act2``
    for ``i`` in 1..4, ``j`` in 0..1 (:meth:`unit_names`).

    Parameters (measured): backbone 11,168,832; with ``PoolBNNeck(512)`` and
    ``Linear(512, 10)`` 11,174,986 (11.2M).

    Args:
        in_channels: image channels.
        stem_channels: channels of the stem and of ``layer1``.
        conv_cfg: config of the binary convs (``None``: full precision).
        norm_cfg: config of the norm layers.
        out_indices: stages (0..3) whose outputs ``forward`` returns.
        init_cfg: weight init, Kaiming-normal by default.
    """

    block = BasicBlock

    def __init__(self,
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 conv_cfg: Optional[dict] = dict(type='IRConv2d'),
                 norm_cfg: dict = dict(type='BN'),
                 out_indices: Sequence[int] = (3, ),
                 init_cfg=KAIMING_INIT):
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
                                   self.norm_cfg)
