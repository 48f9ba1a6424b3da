# SKD-BNN binary ResNet-20 on CIFAR-10. Paper top-1: 87.2 (best test accuracy
# over 700 epochs; Zeng et al., "Self-knowledge distillation enhanced binary
# neural networks derived from underutilized information", Applied
# Intelligence 2024). IR-Net binary convs (EDE gradient, t from 1e-3 to 10)
# plus the three SKD-BNN losses: feature distillation from the latent
# full-precision weights on the 18 binary units, soft-label bank KL (T=4,
# beta=0.05, off in the first epoch), label-cluster loss on the penultimate
# feature (gamma=0.01).
# Recipe: 700 epochs, per-epoch linear warm-up over 8 epochs then cosine to
# 0, SGD momentum 0.9, lr 0.1, weight decay 1e-4 (all parameters), batch 128
# on 1 GPU.
_base_ = [
    '../_base_/models/bnn-resnet20_cifar.py',
    '../_base_/datasets/cifar10_bs128.py',
    '../_base_/schedules/cifar10_resnet20_e700.py',
    '../_base_/default_runtime.py',
]

model = dict(
    type='SKDImageClassifier',
    distill=dict(
        # outputs of the 18 binary units: layer{1..3}.{0..2}.act{1,2}
        units=r'layer\d+\.\d+\.act\d',
        feat_loss=dict(type='ChannelSpatialDistillLoss', loss_weight=1.0),
        label_loss=dict(
            type='SoftLabelKLLoss', loss_weight=0.05, temperature=4.0),
        cluster_loss=dict(type='LabelClusterLoss', loss_weight=0.01)))

custom_hooks = [
    dict(type='EDEHook', t_min=1e-3, t_max=10.0),
    # epoch-end bank update (before the checkpoint is saved); the bank is
    # also written to work_dir/soft_label_bank/epoch_N.json every 50 epochs
    dict(type='SoftLabelBankHook', save_interval=50),
]
