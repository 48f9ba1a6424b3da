# Full-precision twin of the binary ResNet-18 on CIFAR-10: the same network
# (Hardtanh, one shortcut per block) with real nn.Conv2d in place of
# IRConv2d; the upper reference for the binary models.
# Recipe (same as IR-Net): 800 epochs, per-epoch linear warm-up over 16
# epochs then cosine to 0, SGD momentum 0.9, lr 0.3, weight decay 1e-5, batch
# 128 on 1 GPU.
_base_ = [
    '../_base_/models/bnn-resnet18_cifar.py',
    '../_base_/datasets/cifar10_bs128.py',
    '../_base_/schedules/cifar10_resnet18_e800.py',
    '../_base_/default_runtime.py',
]

model = dict(backbone=dict(conv_cfg=None))
