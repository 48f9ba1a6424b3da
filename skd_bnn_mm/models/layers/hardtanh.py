"""``Hardtanh`` for ``act_cfg``: the signed activation of binary networks.

A binary conv keeps only ``sign(x)`` of its input. After ``ReLU``/``ReLU6``
every input is >= 0 and binarises to +1, so the conv sees a constant;
``Hardtanh`` (clip to [-1, 1]) keeps the sign and is what IR-Net, Bi-Real and
SKD-BNN use between binary convs. mmcv registers ``ReLU``, ``ReLU6``, ``Tanh``
... but not ``Hardtanh``; this makes ``act_cfg=dict(type='Hardtanh')`` work in
mmpretrain backbones and in mmcv's ``ConvModule`` (which adds ``inplace``).
"""
import torch.nn as nn
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmpretrain.registry import MODELS

Hardtanh = nn.Hardtanh

MODELS.register_module('Hardtanh', module=Hardtanh)
# mmcv's build_activation_layer builds from mmengine's root registry; with no
# default scope only the root is searched (as for IRConv2d)
if 'Hardtanh' not in MMENGINE_MODELS.module_dict:
    MMENGINE_MODELS.register_module('Hardtanh', module=Hardtanh)
