# Full-precision twin of the binary ResNet-20 on CIFAR-10: the same network
# (Hardtanh, shortcut around every conv, option-A shortcuts) with real
# nn.Conv2d in place of IRConv2d; the upper reference for the binary models.
# Recipe (same as IR-Net): 700 epochs, per-epoch linear warm-up over 8 epochs
# then cosine to 0, SGD momentum 0.9, lr 0.1, weight decay 1e-4, batch 128 on
# 1 GPU.
_base_ = [
    '../_base_/models/bnn-resnet20_cifar.py',
    '../_base_/datasets/cifar10_bs128.py',
    '../_base_/schedules/cifar10_resnet20_e700.py',
    '../_base_/default_runtime.py',
]

model = dict(backbone=dict(conv_cfg=None))
