# IR-Net binary ResNet-18 (Bi-Real style shortcuts) on ImageNet-1k, trained
# without distillation. Binary 3x3 convs with the EDE gradient, t rising
# log-linearly from 1e-3 to 10 over training (EDEHook).
# Recipe: 128 epochs, per-epoch linear warm-up over 8 epochs then cosine to
# 0, SGD momentum 0.9, lr 0.1, weight decay 1e-5 (all parameters), batch 256
# (8 GPUs x 32).
_base_ = [
    '../_base_/models/bnn-resnet18_in1k.py',
    '../_base_/datasets/imagenet_bs32_pca.py',
    '../_base_/schedules/imagenet_resnet18_e128.py',
    '../_base_/default_runtime.py',
]

custom_hooks = [dict(type='EDEHook', t_min=1e-3, t_max=10.0)]
