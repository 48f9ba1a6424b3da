# IR-Net binarisation of an unmodified timm ResNet-18 from a config alone:
# BinarizedBackbone builds mmpretrain's TIMMBackbone and swaps every nn.Conv2d
# except the stem conv and the 1x1 downsample convs (kept full precision, as
# in the paper) for IRConv2d; ReLUs become Hardtanh so binary convs see signed
# inputs (replace_activations, on by default: ReLU, ReLU6, Hardswish, ...).
# EDEHook schedules the EDE gradient (t from 1e-3 to 10).
# timm's ResNet-18 keeps its ImageNet stem (7x7/2 conv + max-pool), so on
# 32x32 images the last stage is 1x1: an example of the mechanism, not a
# CIFAR-tuned network (see configs/irnet/ for those).
# Recipe of the ResNet-18 CIFAR-10 runs: 800 epochs, warm-up 16 + cosine,
# SGD lr 0.3, weight decay 1e-5, batch 128 on 1 GPU.
_base_ = [
    '../_base_/datasets/cifar10_bs128.py',
    '../_base_/schedules/cifar10_resnet18_e800.py',
    '../_base_/default_runtime.py',
]

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='BinarizedBackbone',
        backbone=dict(
            type='TIMMBackbone', model_name='resnet18', pretrained=False),
        conv_cfg=dict(type='IRConv2d'),
        keep_first=True,
        exclude=['*downsample*']),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=512,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )))

custom_hooks = [dict(type='EDEHook', t_min=1e-3, t_max=10.0)]
