# SKD-BNN binary ResNet-18 on CIFAR-10. Paper top-1: 93.0 (best test accuracy
# over 800 epochs; Zeng et al., Applied Intelligence 2024). IR-Net binary
# convs (EDE, t from 1e-3 to 10) plus the SKD-BNN losses: feature
# distillation on the 16 binary conv units, soft-label bank KL (T=4,
# beta=0.05, off in the first epoch), label-cluster loss on the penultimate
# feature (gamma=0.01).
# Recipe: 800 epochs, per-epoch linear warm-up over 16 epochs then cosine to
# 0, SGD momentum 0.9, lr 0.3, weight decay 1e-5 (all parameters), batch 128
# on 1 GPU.
_base_ = [
    '../_base_/models/bnn-resnet18_cifar.py',
    '../_base_/datasets/cifar10_bs128.py',
    '../_base_/schedules/cifar10_resnet18_e800.py',
    '../_base_/default_runtime.py',
]

model = dict(
    type='SKDImageClassifier',
    distill=dict(
        # the 16 binary conv outputs after their Hardtanh:
        # layer{1..4}.{0,1}.act{1,2}
        units=r'layer\d+\.\d+\.act\d',
        feat_loss=dict(type='ChannelSpatialDistillLoss', loss_weight=1.0),
        label_loss=dict(
            type='SoftLabelKLLoss', loss_weight=0.05, temperature=4.0),
        cluster_loss=dict(type='LabelClusterLoss', loss_weight=0.01)))

custom_hooks = [
    dict(type='EDEHook', t_min=1e-3, t_max=10.0),
    dict(type='SoftLabelBankHook', save_interval=50),
]
