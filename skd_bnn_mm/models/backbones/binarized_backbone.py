"""Binarise any registered backbone from a config, with no code."""
import warnings
from typing import Optional, Sequence

import torch
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS

from ..utils.binarize import _warn_sign_losing, binarize
from ..utils.binary_input_check import arm_binary_input_check
from ..utils.signed_activations import replace_activations as _replace_acts


@MODELS.register_module()
class BinarizedBackbone(BaseModule):
    """Build ``backbone`` and swap its ``nn.Conv2d`` layers for binary convs,
    and its sign-losing activations for ``Hardtanh``.

    Lets a config turn a backbone that knows nothing about binary layers
    (mmpretrain's ``TIMMBackbone`` around a timm model, ``ResNet``, ...) into
    a binary network; ``forward`` is the inner backbone's. The conversion
    rules are those of :func:`skd_bnn_mm.models.utils.binarize` (first conv
    and linear layers stay full precision, fnmatch ``include``/``exclude``)
    and :func:`skd_bnn_mm.models.utils.replace_activations`.

    Example::

        backbone=dict(
            type='BinarizedBackbone',
            backbone=dict(type='TIMMBackbone', model_name='resnet18'),
            exclude=['*downsample*'])

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
        replace_activations (bool): swap the activations that are 0 on (part
            of) the negative axis (``ReLU``, ``ReLU6``, ``Hardswish``, timm's
            and mmcv's variants) for ``act_cfg``. After a ``ReLU`` every input
            of a binary conv is >= 0 and its sign always +1, so this is on by
            default. What was replaced and left is logged and kept in
            :attr:`activation_report`.
        act_cfg (dict): the signed activation put in their place. Defaults to
            ``dict(type='Hardtanh')`` (clip to [-1, 1]).
        act_exclude (list[str], optional): fnmatch patterns of activations to
            keep.
        input_check (str, optional): on the first forward, ``'error'``
            (default) stops when a binary conv got only inputs >= 0 (e.g.
            after an ``F.relu`` in a forward, which no module swap reaches),
            ``'warn'`` warns, ``None`` skips the check.
        binarize_convs (bool): set False when the inner backbone already
            builds binary convs itself (``conv_cfg`` of mmpretrain backbones)
            and only the activation swap is wanted.
        replace_relu_with_hardtanh (bool, optional): deprecated name of
            ``replace_activations``.
        init_cfg (dict, optional): init config of this wrapper.
    """

    def __init__(self,
                 backbone: dict,
                 conv_cfg: Optional[dict] = None,
                 keep_first: bool = True,
                 include: Optional[Sequence[str]] = None,
                 exclude: Optional[Sequence[str]] = None,
                 example_input_shape: Optional[Sequence[int]] = None,
                 replace_activations: bool = True,
                 act_cfg: Optional[dict] = None,
                 act_exclude: Optional[Sequence[str]] = None,
                 input_check: Optional[str] = 'error',
                 binarize_convs: bool = True,
                 replace_relu_with_hardtanh: Optional[bool] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if replace_relu_with_hardtanh is not None:
            warnings.warn(
                'BinarizedBackbone: replace_relu_with_hardtanh is deprecated, '
                'use replace_activations (on by default; it also replaces '
                'ReLU6, Hardswish, ...)', DeprecationWarning)
            replace_activations = bool(replace_relu_with_hardtanh)
        self.backbone = MODELS.build(backbone)
        self.binarize_report = None
        self.activation_report = None
        if binarize_convs:
            example = (None if example_input_shape is None else
                       torch.zeros(tuple(example_input_shape)))
            self.binarize_report = binarize(
                self.backbone,
                conv_cfg=conv_cfg,
                keep_first=keep_first,
                include=include,
                exclude=exclude,
                example_input=example,
                replace_activations=replace_activations,
                act_cfg=act_cfg,
                act_exclude=act_exclude)
            self.activation_report = self.binarize_report.activations
        elif replace_activations:
            self.activation_report = _replace_acts(
                self.backbone, act_cfg=act_cfg, exclude=act_exclude)
        else:
            _warn_sign_losing(self.backbone, 'BinarizedBackbone',
                              'replace_activations=True')
        # module names in messages as the classifier sees them
        self._input_check = arm_binary_input_check(
            self.backbone, action=input_check, root=self, prefix='backbone.')

    def forward(self, *args, **kwargs):
        return self.backbone(*args, **kwargs)
