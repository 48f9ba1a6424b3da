# IR-Net binarisation of mmpretrain's own ResNet_CIFAR-18 through its
# `conv_cfg`: every conv the backbone builds becomes an IRConv2d (EDE
# gradient, t from 1e-3 to 10 over training by EDEHook). No plugin backbone is
# involved: this is how any mmpretrain backbone that takes `conv_cfg` is
# binarised.
#
# Two consequences of the conv_cfg route, unlike the paper's networks
# (configs/irnet/irnet_resnet18_1xb128_cifar10.py):
# - `conv_cfg` applies to every conv, so the stem conv and the 1x1
#   downsample convs are binary too;
# - mmpretrain's ResNet hard-codes ReLU (it takes no act_cfg), after which
#   every input of a binary conv is >= 0 and binarises to +1: the network
#   trains to chance. BinarizedBackbone(binarize_convs=False) only swaps those
#   ReLUs for Hardtanh (replace_activations, on by default), and stops at the
#   first forward if a binary conv still sees only inputs >= 0.
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
            type='ResNet_CIFAR', depth=18, conv_cfg=dict(type='IRConv2d')),
        binarize_convs=False),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=512,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )))

custom_hooks = [dict(type='EDEHook', t_min=1e-3, t_max=10.0)]
