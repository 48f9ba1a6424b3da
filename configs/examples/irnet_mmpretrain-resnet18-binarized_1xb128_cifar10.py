# The README snippet as a whole config: mmpretrain's own ResNet_CIFAR-18
# model file, binarised from the config. BinarizedBackbone swaps every
# nn.Conv2d but the stem conv and the 1x1 downsample convs (kept full
# precision, as in the paper's networks) for IRConv2d, and the ReLUs for
# Hardtanh: after a ReLU every input of a binary conv is >= 0, binarises to
# +1, and the network trains to chance (the first forward stops with an error
# naming those convs if any is left). EDEHook schedules the EDE gradient.
# Recipe of the ResNet-18 CIFAR-10 runs: 800 epochs, warm-up 16 + cosine,
# SGD lr 0.3, weight decay 1e-5, batch 128 on 1 GPU.
_base_ = [
    'mmpretrain::_base_/models/resnet18_cifar.py',
    '../_base_/datasets/cifar10_bs128.py',
    '../_base_/schedules/cifar10_resnet18_e800.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='BinarizedBackbone',
        backbone=dict(type='ResNet_CIFAR', depth=18),
        exclude=['*downsample*']))

custom_hooks = [dict(type='EDEHook', t_min=1e-3, t_max=10.0)]
