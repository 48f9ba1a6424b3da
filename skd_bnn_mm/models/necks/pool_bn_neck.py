"""Neck that turns the last feature map into the penultimate feature."""
from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS

POOL_MODES = ('avg', 'flatten')


@MODELS.register_module()
class PoolBNNeck(BaseModule):
    """Global average pool or flatten, then an optional ``BatchNorm1d``.

    The output ``[B, D]`` is the penultimate feature that the head's linear
    layer consumes (and that the label-cluster loss of SKD-BNN reads). The
    binary ResNets use ``pool='avg', norm=True``; VGG-Small uses
    ``pool='flatten', norm=False``.

    Only the last feature map of a tuple input is used (mmpretrain's
    ``LinearClsHead`` reads only the last one anyway); the output is a
    1-tuple, like mmpretrain necks.

    Args:
        in_channels: the output width ``D``: the channels ``C`` for
            ``pool='avg'``, ``C * H * W`` for ``pool='flatten'``.
        pool: ``'avg'`` (global average pool) or ``'flatten'``.
        norm: add ``BatchNorm1d(D)`` (module ``bn``) after pooling.
        init_cfg: weight init config.
    """

    def __init__(self, in_channels: int, pool: str = 'avg', norm: bool = True,
                 init_cfg=None):
        super().__init__(init_cfg)
        if pool not in POOL_MODES:
            raise ValueError(f'PoolBNNeck: unknown pool {pool!r}; valid '
                             f'values are {POOL_MODES}.')
        self.in_channels = in_channels
        self.pool = pool
        self.bn = nn.BatchNorm1d(in_channels) if norm else None

    def forward(self, inputs: Union[torch.Tensor, Sequence[torch.Tensor]]
                ) -> Tuple[torch.Tensor]:
        x = inputs[-1] if isinstance(inputs, (tuple, list)) else inputs
        if x.dim() != 4:
            raise ValueError(f'PoolBNNeck expects a [B, C, H, W] feature map, '
                             f'got shape {tuple(x.shape)}.')
        if self.pool == 'avg':
            x = x.mean(dim=(2, 3))
        else:
            x = x.flatten(1)
        if x.shape[1] != self.in_channels:
            hint = ('C' if self.pool == 'avg' else 'C*H*W')
            raise ValueError(
                f'PoolBNNeck(pool={self.pool!r}) got {x.shape[1]} features '
                f'but in_channels={self.in_channels}; set in_channels to '
                f'{hint} of the last feature map (= {x.shape[1]}).')
        if self.bn is not None:
            x = self.bn(x)
        return (x, )
