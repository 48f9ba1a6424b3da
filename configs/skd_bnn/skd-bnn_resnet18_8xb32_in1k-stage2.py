# SKD-BNN binary ResNet-18 on ImageNet-1k, stage 2. Paper top-1: 59.7 (best
# validation accuracy; Zeng et al., Applied Intelligence 2024).
# Starts from the weights of stage 1's final checkpoint (load_from: weights
# and buffers, including the soft-label bank, which is therefore used from
# the first epoch; optimizer and schedule start afresh) and trains 128 more
# epochs: no warm-up, cosine from lr 0.001 to 0, SGD momentum 0.9, weight
# decay 1e-5 (all parameters), batch 256 (8 GPUs x 32). EDEHook follows this
# run's epochs (t from 1e-3 to 10 again).
_base_ = [
    '../_base_/models/bnn-resnet18_in1k.py',
    '../_base_/datasets/imagenet_bs32_pca.py',
    '../_base_/schedules/imagenet_resnet18_e128_stage2.py',
    '../_base_/default_runtime.py',
]

model = dict(
    type='SKDImageClassifier',
    distill=dict(
        units=r'layer\d+\.\d+\.act\d',
        feat_loss=dict(type='ChannelSpatialDistillLoss', loss_weight=1.0),
        label_loss=dict(
            type='SoftLabelKLLoss', loss_weight=0.05, temperature=4.0),
        cluster_loss=dict(type='LabelClusterLoss', loss_weight=0.01)))

custom_hooks = [
    dict(type='EDEHook', t_min=1e-3, t_max=10.0),
    dict(type='SoftLabelBankHook', save_interval=0),
]

# stage 1's last checkpoint in its default work dir; override with
# --cfg-options load_from=PATH
load_from = 'work_dirs/skd-bnn_resnet18_8xb32_in1k/epoch_128.pth'
