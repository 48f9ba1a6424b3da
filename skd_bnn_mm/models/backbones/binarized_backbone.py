"""Binarise any registered backbone from a config, with no code."""
from typing import Optional, Sequence

import torch
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS

from ..utils.binarize import binarize, relu_to_hardtanh


@MODELS.register_module()
class BinarizedBackbone(BaseModule):
    """Build ``backbone`` and swap its ``nn.Conv2d`` layers for binary convs.

    Lets a config turn a backbone that knows nothing about binary layers
    (mmpretrain's ``TIMMBackbone`` around a timm model, ``ResNet``, ...) into
    a binary network; ``forward`` is the inner backbone's. The conversion
    rules are those of :func:`skd_bnn_mm.models.utils.binarize` (first conv
    and linear layers stay full precision, fnmatch ``include``/``exclude``).

    Example::

        backbone=dict(
            type='BinarizedBackbone',
            backbone=dict(type='TIMMBackbone', model_name='resnet18'),
            exclude=['*downsample*'],
            replace_relu_with_hardtanh=True)

    Args:
        backbone (dict): config of the inner backbone (built with MODELS).
        conv_cfg (dict): binary conv config. Defaults to
            ``dict(type='IRConv2d')``.
        keep_first (bool): keep the first conv full precision.
        include, exclude (list[str], optional): fnmatch patterns on the inner
            backbone's module names (without the ``backbone.`` prefix).
        example_input_shape (tuple, optional): e.g. ``(1, 3, 32, 32)``; when
            given, the first conv is found by a dry forward pass instead of
            registration order.
        replace_relu_with_hardtanh (bool): swap ``nn.ReLU`` modules for
            ``nn.Hardtanh``. After a ReLU every input of a binary conv is >= 0
            and its sign is always +1, so a binary network needs this unless
            the backbone already uses a signed activation.
        binarize_convs (bool): set False when the inner backbone already
            builds binary convs itself (``conv_cfg`` of mmpretrain backbones)
            and only the activation swap is wanted.
        init_cfg (dict, optional): init config of this wrapper.
    """

    def __init__(self,
                 backbone: dict,
                 conv_cfg: Optional[dict] = None,
                 keep_first: bool = True,
                 include: Optional[Sequence[str]] = None,
                 exclude: Optional[Sequence[str]] = None,
                 example_input_shape: Optional[Sequence[int]] = None,
                 replace_relu_with_hardtanh: bool = False,
                 binarize_convs: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        self.backbone = MODELS.build(backbone)
        self.binarize_report = None
        if binarize_convs:
            example = (None if example_input_shape is None else
                       torch.zeros(tuple(example_input_shape)))
            self.binarize_report = binarize(
                self.backbone,
                conv_cfg=conv_cfg,
                keep_first=keep_first,
                include=include,
                exclude=exclude,
                example_input=example)
        self.hardtanh_names = (relu_to_hardtanh(self.backbone)
                               if replace_relu_with_hardtanh else [])

    def forward(self, *args, **kwargs):
        return self.backbone(*args, **kwargs)
