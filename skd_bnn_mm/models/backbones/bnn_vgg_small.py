"""Binary VGG-Small for CIFAR."""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from mmcv.cnn import build_conv_layer
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS

from .bnn_blocks import ConvPoolBNUnit, norm
from .bnn_resnet_base import check_out_indices
from .weight_init import PresetInit  # noqa: F401  (registers 'Preset')


@MODELS.register_module()
class BNNVGGSmall(BaseBackbone):
    """Binary VGG-Small (CIFAR) of IR-Net / SKD-BNN.

    Full-precision stem (3x3 conv 3->128, BN, Hardtanh), then five binary
    :class:`ConvPoolBNUnit` named ``unit1..unit5``: 128->128 (+max-pool),
    128->256, 256->256 (+max-pool), 256->512, 512->512 (+max-pool). Each
    has ``unit{i}.conv``, ``unit{i}.pool`` (pooling units only),
    ``unit{i}.bn`` and ``unit{i}.act``. A 32x32 input gives a 512x4x4 map,
    flattened to 8192 features by ``PoolBNNeck(8192, pool='flatten')``.

    Binary-unit outputs (5): ``unit1.act`` .. ``unit5.act``
    (:meth:`unit_names`).

    Parameters (measured): backbone 4,578,176; with ``Linear(8192, 10)``
    4,660,106 (4.66M).

    Args:
        in_channels: image channels.
        conv_cfg: config of the binary convs (``None``: full precision).
        norm_cfg: config of the norm layers.
        out_indices: units (0..4) whose outputs ``forward`` returns.
        init_cfg: weight init; by default the authors' VGG-Small init
            (convs ``N(0, sqrt(2 / (k*k*out_channels)))``, see
            :mod:`~skd_bnn_mm.models.backbones.weight_init`);
            ``dict(type='Preset', preset='kaiming-fan-in')`` gives the
            Kaiming fan-in init used before.
    """

    #: (out_channels, max-pool after the conv) of the five binary units.
    arch = ((128, True), (256, False), (256, True), (512, False),
            (512, True))

    def __init__(self,
                 in_channels: int = 3,
                 conv_cfg: Optional[dict] = dict(type='IRConv2d'),
                 norm_cfg: dict = dict(type='BN'),
                 out_indices: Sequence[int] = (4, ),
                 init_cfg=dict(type='Preset', preset='authors-vgg-small')):
        super().__init__(init_cfg)
        self.out_indices = check_out_indices(out_indices, len(self.arch),
                                             'units')
        stem_channels = 128
        self.stem_conv = build_conv_layer(None, in_channels, stem_channels,
                                          kernel_size=3, stride=1, padding=1,
                                          bias=False)
        self.stem_bn = norm(norm_cfg, stem_channels)
        self.stem_act = nn.Hardtanh()
        channels = stem_channels
        for i, (out_ch, with_pool) in enumerate(self.arch):
            self.add_module(
                f'unit{i + 1}',
                ConvPoolBNUnit(channels, out_ch, with_pool, conv_cfg=conv_cfg,
                               norm_cfg=norm_cfg))
            channels = out_ch
        self.out_channels = channels

    def unit_names(self) -> List[str]:
        """Module names whose outputs are the binary units' outputs."""
        return [f'unit{i + 1}.act' for i in range(len(self.arch))]

    def forward(self, x: torch.Tensor) -> tuple:
        x = self.stem_act(self.stem_bn(self.stem_conv(x)))
        outs = []
        for i in range(len(self.arch)):
            x = getattr(self, f'unit{i + 1}')(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
