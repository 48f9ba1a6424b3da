"""Binary ResNet-20 for CIFAR with a shortcut around every conv."""
from typing import Optional, Sequence

import torch.nn as nn
from mmpretrain.registry import MODELS

from .bnn_blocks import BiRealBasicBlock, OptionAShortcut
from .bnn_resnet_base import BNNResNetBase
from .weight_init import PresetInit  # noqa: F401  (registers 'Preset')


@MODELS.register_module()
class BNNResNet20CIFAR(BNNResNetBase):
    """Binary ResNet-20 (CIFAR) of IR-Net / SKD-BNN.

    Full-precision stem (3x3 conv, 16 channels, BN, Hardtanh), then
    ``layer1..layer3`` of 3 :class:`BiRealBasicBlock` each (16/32/64
    channels, stride 2 in the first block of ``layer2`` and ``layer3``).
    Where the shape changes, unit 1's shortcut is the parameter-free
    "option A" (:class:`OptionAShortcut`, module ``downsample``), so all 18
    3x3 convs of the stages are binary and nothing else is.

    Binary-unit outputs (18): ``layer{i}.{j}.act1`` and ``layer{i}.{j}.act2``
    for ``i`` in 1..3, ``j`` in 0..2 (:meth:`unit_names`).

    Parameters (measured): backbone 269,072; with ``PoolBNNeck(64)`` and
    ``Linear(64, 10)`` 269,850 (0.27M).

    Args:
        in_channels: image channels.
        stem_channels: channels of the stem and of ``layer1``.
        conv_cfg: config of the binary convs (``None``: full precision).
        norm_cfg: config of the norm layers.
        out_indices: stages (0..2) whose outputs ``forward`` returns.
        init_cfg: weight init; by default the authors' ResNet-20 init
            (Kaiming-normal fan-in convs, see
            :mod:`~skd_bnn_mm.models.backbones.weight_init`).
    """

    block = BiRealBasicBlock

    def __init__(self,
                 in_channels: int = 3,
                 stem_channels: int = 16,
                 conv_cfg: Optional[dict] = dict(type='IRConv2d'),
                 norm_cfg: dict = dict(type='BN'),
                 out_indices: Sequence[int] = (2, ),
                 init_cfg=dict(type='Preset', preset='authors-resnet20')):
        c = stem_channels
        super().__init__(
            stage_channels=(c, 2 * c, 4 * c),
            stage_blocks=(3, 3, 3),
            strides=(1, 2, 2),
            in_channels=in_channels,
            stem_channels=stem_channels,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            out_indices=out_indices,
            init_cfg=init_cfg)

    def _make_shortcut(self, in_channels: int, out_channels: int,
                       stride: int) -> nn.Module:
        return OptionAShortcut(in_channels, out_channels, stride)
