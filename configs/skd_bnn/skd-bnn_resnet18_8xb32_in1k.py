# SKD-BNN binary ResNet-18 on ImageNet-1k, stage 1. Paper top-1: 59.5 (best
# validation accuracy over 128 epochs; 59.7 after stage 2; Zeng et al.,
# Applied Intelligence 2024). Bi-Real-style binary ResNet-18 with IR-Net
# binary convs (EDE, t from 1e-3 to 10) plus the SKD-BNN losses: feature
# distillation on the 16 binary units, soft-label bank KL (T=4, beta=0.05, off
# in the first epoch), label-cluster loss on the penultimate feature
# (gamma=0.01).
# Recipe: 128 epochs, per-epoch linear warm-up over 8 epochs then cosine to
# 0, SGD momentum 0.9, lr 0.1, weight decay 1e-5 (all parameters), batch 256
# (8 GPUs x 32). Stage 2: skd-bnn_resnet18_8xb32_in1k-stage2.py.
_base_ = [
    '../_base_/models/bnn-resnet18_in1k.py',
    '../_base_/datasets/imagenet_bs32_pca.py',
    '../_base_/schedules/imagenet_resnet18_e128.py',
    '../_base_/default_runtime.py',
]

model = dict(
    type='SKDImageClassifier',
    distill=dict(
        # layer{1..4}.{0,1}.act{1,2}: every conv has its own shortcut
        units=r'layer\d+\.\d+\.act\d',
        feat_loss=dict(type='ChannelSpatialDistillLoss', loss_weight=1.0),
        label_loss=dict(
            type='SoftLabelKLLoss', loss_weight=0.05, temperature=4.0),
        cluster_loss=dict(type='LabelClusterLoss', loss_weight=0.01)))

custom_hooks = [
    dict(type='EDEHook', t_min=1e-3, t_max=10.0),
    # the 1000x1000 bank is saved in every checkpoint; set save_interval to
    # also write it as JSON (about 20 MB per file)
    dict(type='SoftLabelBankHook', save_interval=0),
]
