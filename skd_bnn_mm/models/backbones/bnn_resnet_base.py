"""Common skeleton of the binary ResNets: stem, stages, outputs."""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from mmpretrain.models.backbones.base_backbone import BaseBackbone

from mmcv.cnn import build_conv_layer

from .bnn_blocks import KAIMING_INIT, norm


def check_out_indices(out_indices: Sequence[int], num: int,
                      what: str) -> tuple:
    """Normalise ``out_indices`` (negative ones count from the end)."""
    if isinstance(out_indices, int):
        out_indices = (out_indices, )
    out = []
    for i in out_indices:
        j = i + num if i < 0 else i
        if not 0 <= j < num:
            raise ValueError(f'out_indices entry {i} is out of range: this '
                             f'backbone has {num} {what} (valid indices 0..'
                             f'{num - 1} or -{num}..-1).')
        out.append(j)
    return tuple(out)


class BNNResNetBase(BaseBackbone):
    """Binary ResNet: a full-precision stem, then stages ``layer1..layerN``.

    Subclasses set ``block`` (and the stem shape: ``stem_kernel``,
    ``stem_stride``, ``stem_maxpool``) and implement ``_make_shortcut``.
    The stem is ``stem_conv -> stem_bn -> stem_act [-> stem_pool]``, full
    precision. Every block holds two binary units whose outputs
    are ``layer{i}.{j}.act1`` and ``layer{i}.{j}.act2``
    (see :meth:`unit_names`).

    Args:
        stage_channels: output channels of each stage.
        stage_blocks: number of blocks in each stage.
        strides: stride of the first block of each stage.
        in_channels: image channels.
        stem_channels: output channels of the stem.
        conv_cfg: config of the binary convs; ``None`` builds ``nn.Conv2d``
            (the full-precision twin).
        norm_cfg: config of the norm layers.
        out_indices: stages whose outputs ``forward`` returns (in stage
            order; negative indices count from the last stage).
        init_cfg: weight init, Kaiming-normal by default.
    """

    block = None
    #: stem conv kernel / stride, and a 3x3/2 max-pool after it (ImageNet)
    stem_kernel = 3
    stem_stride = 1
    stem_maxpool = False

    def __init__(self,
                 stage_channels: Sequence[int],
                 stage_blocks: Sequence[int],
                 strides: Sequence[int],
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 conv_cfg: Optional[dict] = dict(type='IRConv2d'),
                 norm_cfg: dict = dict(type='BN'),
                 out_indices: Sequence[int] = (-1, ),
                 init_cfg=KAIMING_INIT):
        super().__init__(init_cfg)
        if not (len(stage_channels) == len(stage_blocks) == len(strides)):
            raise ValueError(
                f'stage_channels {tuple(stage_channels)}, stage_blocks '
                f'{tuple(stage_blocks)} and strides {tuple(strides)} must '
                'have one entry per stage.')
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.out_indices = check_out_indices(out_indices, len(stage_blocks),
                                             'stages')
        self._make_stem(in_channels, stem_channels)

        self.res_layers = []
        channels = stem_channels
        for i, (out_ch, num_blocks, stride) in enumerate(
                zip(stage_channels, stage_blocks, strides)):
            blocks = []
            for j in range(num_blocks):
                s = stride if j == 0 else 1
                shortcut = None
                if s != 1 or channels != out_ch:
                    shortcut = self._make_shortcut(channels, out_ch, s)
                blocks.append(self.block(channels, out_ch, s, shortcut,
                                         conv_cfg=conv_cfg,
                                         norm_cfg=norm_cfg))
                channels = out_ch
            name = f'layer{i + 1}'
            self.add_module(name, nn.Sequential(*blocks))
            self.res_layers.append(name)
        self.out_channels = channels

    def _make_stem(self, in_channels: int, stem_channels: int):
        self.stem_conv = build_conv_layer(
            None, in_channels, stem_channels, kernel_size=self.stem_kernel,
            stride=self.stem_stride, padding=self.stem_kernel // 2,
            bias=False)
        self.stem_bn = norm(self.norm_cfg, stem_channels)
        self.stem_act = nn.Hardtanh()
        if self.stem_maxpool:
            self.stem_pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.stem_bn(self.stem_conv(x)))
        return self.stem_pool(x) if self.stem_maxpool else x

    def _make_shortcut(self, in_channels: int, out_channels: int,
                       stride: int) -> nn.Module:
        raise NotImplementedError

    def unit_names(self) -> List[str]:
        """Module names whose outputs are the binary units' outputs."""
        names = []
        for layer_name in self.res_layers:
            for j in range(len(getattr(self, layer_name))):
                names += [f'{layer_name}.{j}.act1', f'{layer_name}.{j}.act2']
        return names

    def forward(self, x: torch.Tensor) -> tuple:
        x = self.forward_stem(x)
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            x = getattr(self, layer_name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
