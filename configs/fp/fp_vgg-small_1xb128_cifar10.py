# Full-precision twin of the binary VGG-Small on CIFAR-10: the same network
# (Hardtanh, max-pool before BN) with real nn.Conv2d in place of IRConv2d;
# the upper reference for the binary models.
# Recipe (same as IR-Net): 600 epochs, per-epoch linear warm-up over 8 epochs
# then cosine to 0, SGD momentum 0.9, lr 0.05, weight decay 1e-4, batch 128
# on 1 GPU.
_base_ = [
    '../_base_/models/bnn-vgg-small_cifar.py',
    '../_base_/datasets/cifar10_bs128.py',
    '../_base_/schedules/cifar10_vgg-small_e600.py',
    '../_base_/default_runtime.py',
]

model = dict(backbone=dict(conv_cfg=None))
