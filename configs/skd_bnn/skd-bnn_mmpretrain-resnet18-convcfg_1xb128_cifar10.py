# SKD-BNN on mmpretrain's own ResNet_CIFAR-18, binarised through its
# `conv_cfg` (see configs/examples/irnet_mmpretrain-resnet18-convcfg_1xb128_
# cifar10.py: every conv is an IRConv2d, the stem and 1x1 downsample convs
# included, and the ReLUs become Hardtanh: with ReLU every binary input is
# >= 0, the network trains to chance and the features SKD-BNN distils are all
# zero). Nothing of SKD-BNN is specific to
# a backbone: the binary units are found by module name, the teacher pass
# value-swaps every IRConv2d, and the penultimate feature is the
# GlobalAveragePooling output (the input of the head's linear layer).
# Not in the paper (its ResNet-18 is configs/skd_bnn/skd-bnn_resnet18_
# 1xb128_cifar10.py, paper top-1 93.0); no result measured.
# mmpretrain's BasicBlock applies one activation module (`relu`, a Hardtanh
# here) twice: after conv1+BN and after conv2+BN+shortcut; both calls are
# recorded, giving the 16 units of the 8 blocks.
# Recipe of the ResNet-18 CIFAR-10 runs: 800 epochs, warm-up 16 + cosine,
# SGD lr 0.3, weight decay 1e-5, batch 128 on 1 GPU.
_base_ = ['../examples/irnet_mmpretrain-resnet18-convcfg_1xb128_cifar10.py']

model = dict(
    type='SKDImageClassifier',
    distill=dict(
        # names inside BinarizedBackbone: backbone.layer{1..4}.{0,1}.relu
        units=r'backbone\.layer\d+\.\d+\.relu',
        feat_loss=dict(type='ChannelSpatialDistillLoss', loss_weight=1.0),
        label_loss=dict(
            type='SoftLabelKLLoss', loss_weight=0.05, temperature=4.0),
        cluster_loss=dict(type='LabelClusterLoss', loss_weight=0.01)))

custom_hooks = [
    dict(type='EDEHook', t_min=1e-3, t_max=10.0),
    dict(type='SoftLabelBankHook', save_interval=50),
]
