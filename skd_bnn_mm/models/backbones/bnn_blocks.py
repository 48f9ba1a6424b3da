"""Building blocks of the binary backbones.

A *binary unit* is one binary conv followed by its BN, an optional shortcut
addition and a Hardtanh. Each unit ends in its own ``nn.Hardtanh`` module, so
the unit's output is that module's output and can be recorded by module name
with a forward hook. Activations are never in-place and shortcuts are added
out of place, so a recorded tensor is never overwritten later in the forward.

Every binary conv is built with ``mmcv.cnn.build_conv_layer(conv_cfg, ...)``:
``conv_cfg=None`` gives the full-precision twin of the same network.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_conv_layer, build_norm_layer

#: Default weight init of the binary backbones: Kaiming-normal (fan-in,
#: gain sqrt(2)) for convs and linears, as in the method's reference code.
#: ``Conv2d`` also matches the binary conv (a subclass of ``nn.Conv2d``);
#: ``IRConv2d`` is listed in case it is not.
KAIMING_INIT = [
    dict(type='Kaiming', layer=['Conv2d', 'IRConv2d', 'Linear'],
         mode='fan_in', nonlinearity='relu', distribution='normal'),
    dict(type='Constant', val=1, bias=0, layer=['_BatchNorm']),
]


def binary_conv3x3(conv_cfg: Optional[dict], in_channels: int,
                   out_channels: int, stride: int = 1) -> nn.Module:
    """3x3 conv, padding 1, no bias, of the type that ``conv_cfg`` names."""
    return build_conv_layer(conv_cfg, in_channels, out_channels,
                            kernel_size=3, stride=stride, padding=1,
                            bias=False)


def norm(norm_cfg: dict, channels: int) -> nn.Module:
    return build_norm_layer(norm_cfg, channels)[1]


def projection_shortcut(in_channels: int, out_channels: int, stride: int,
                        norm_cfg: dict, avg_down: bool = False) -> nn.Module:
    """Full-precision shortcut: 1x1 conv (stride ``stride``) + BN.

    With ``avg_down`` the spatial reduction is a 2x2 average pool and the
    1x1 conv has stride 1, so no input pixel is skipped.
    """
    layers = []
    conv_stride = stride
    if avg_down and stride != 1:
        layers.append(nn.AvgPool2d(kernel_size=stride, stride=stride,
                                   ceil_mode=True, count_include_pad=False))
        conv_stride = 1
    layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=1,
                            stride=conv_stride, bias=False))
    layers.append(norm(norm_cfg, out_channels))
    return nn.Sequential(*layers)


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut for a change of shape ("option A").

    Takes every ``stride``-th pixel and zero-pads the channels, half of the
    new channels before the old ones and the rest after them (the layout of
    the IR-Net / SKD-BNN reference ResNet-20).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(
                f'OptionAShortcut can only add channels: got in_channels='
                f'{in_channels} > out_channels={out_channels}; use a '
                f'projection shortcut instead.')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        extra = self.out_channels - self.in_channels
        if extra:
            before = extra // 2
            x = F.pad(x, (0, 0, 0, 0, before, extra - before))
        return x

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, '
                f'stride={self.stride}')


class BiRealBasicBlock(nn.Module):
    """Basic block with a shortcut around each conv (two binary units).

    ``unit1 = act1(bn1(conv1(x)) + downsample(x))`` and
    ``unit2 = act2(bn2(conv2(unit1)) + unit1)``; ``downsample`` is ``None``
    (identity) when the shape does not change. A shortcut around every binary
    conv keeps the real-valued information that one binary conv would lose.
    Unit outputs: ``act1`` and ``act2``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN')):
        super().__init__()
        self.conv1 = binary_conv3x3(conv_cfg, in_channels, out_channels,
                                    stride)
        self.bn1 = norm(norm_cfg, out_channels)
        self.act1 = nn.Hardtanh()
        self.conv2 = binary_conv3x3(conv_cfg, out_channels, out_channels)
        self.bn2 = norm(norm_cfg, out_channels)
        self.act2 = nn.Hardtanh()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out1 = self.act1(self.bn1(self.conv1(x)) + identity)
        return self.act2(self.bn2(self.conv2(out1)) + out1)


class BasicBlock(nn.Module):
    """Basic block with one shortcut around both convs (two binary units).

    ``h = act1(bn1(conv1(x)))``, ``out = act2(bn2(conv2(h)) + downsample(x))``.
    Unit outputs: ``act1`` and ``act2``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN')):
        super().__init__()
        self.conv1 = binary_conv3x3(conv_cfg, in_channels, out_channels,
                                    stride)
        self.bn1 = norm(norm_cfg, out_channels)
        self.act1 = nn.Hardtanh()
        self.conv2 = binary_conv3x3(conv_cfg, out_channels, out_channels)
        self.bn2 = norm(norm_cfg, out_channels)
        self.act2 = nn.Hardtanh()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(out)) + identity)


class ConvPoolBNUnit(nn.Module):
    """VGG-style binary unit: ``conv -> [max-pool] -> bn -> act``.

    Pooling sits before BN (as in the reference VGG-Small), so BN normalises
    the pooled map. ``pool`` exists only when ``with_pool`` is True.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 with_pool: bool = False, conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN')):
        super().__init__()
        self.conv = binary_conv3x3(conv_cfg, in_channels, out_channels)
        if with_pool:
            self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.with_pool = with_pool
        self.bn = norm(norm_cfg, out_channels)
        self.act = nn.Hardtanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.with_pool:
            x = self.pool(x)
        return self.act(self.bn(x))
