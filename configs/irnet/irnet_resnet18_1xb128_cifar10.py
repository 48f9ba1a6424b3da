# IR-Net binary ResNet-18 on CIFAR-10, trained without distillation (the
# baseline SKD-BNN improves on). Binary 3x3 convs with the EDE gradient, t
# rising log-linearly from 1e-3 to 10 over training (EDEHook).
# Recipe: 800 epochs, per-epoch linear warm-up over 16 epochs then cosine to
# 0, SGD momentum 0.9, lr 0.3, weight decay 1e-5 (all parameters), batch 128
# on 1 GPU.
_base_ = [
    '../_base_/models/bnn-resnet18_cifar.py',
    '../_base_/datasets/cifar10_bs128.py',
    '../_base_/schedules/cifar10_resnet18_e800.py',
    '../_base_/default_runtime.py',
]

custom_hooks = [dict(type='EDEHook', t_min=1e-3, t_max=10.0)]
