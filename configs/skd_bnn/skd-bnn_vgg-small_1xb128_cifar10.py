# SKD-BNN binary VGG-Small on CIFAR-10. Paper top-1: 91.4 (best test accuracy
# over 600 epochs; Zeng et al., Applied Intelligence 2024). IR-Net binary
# convs (EDE, t from 1e-3 to 10) plus the SKD-BNN losses: feature
# distillation on the 5 binary units, soft-label bank KL (T=4, beta=0.05, off
# in the first epoch), label-cluster loss on the flattened 8192-d feature
# (gamma=0.01).
# Recipe: 600 epochs, per-epoch linear warm-up over 8 epochs then cosine to
# 0, SGD momentum 0.9, lr 0.05, weight decay 1e-4 (all parameters), batch 128
# on 1 GPU.
_base_ = [
    '../_base_/models/bnn-vgg-small_cifar.py',
    '../_base_/datasets/cifar10_bs128.py',
    '../_base_/schedules/cifar10_vgg-small_e600.py',
    '../_base_/default_runtime.py',
]

model = dict(
    type='SKDImageClassifier',
    distill=dict(
        # outputs of the 5 binary units (conv -> [max-pool] -> BN -> Hardtanh)
        units=r'unit\d+\.act',
        feat_loss=dict(type='ChannelSpatialDistillLoss', loss_weight=1.0),
        label_loss=dict(
            type='SoftLabelKLLoss', loss_weight=0.05, temperature=4.0),
        cluster_loss=dict(type='LabelClusterLoss', loss_weight=0.01)))

custom_hooks = [
    dict(type='EDEHook', t_min=1e-3, t_max=10.0),
    dict(type='SoftLabelBankHook', save_interval=50),
]
