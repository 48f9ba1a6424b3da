# Binary ResNet-20 for CIFAR-10 (IR-Net / SKD-BNN): full-precision stem,
# 18 binary 3x3 convs (IRConv2d), a shortcut around every conv, option-A
# shortcuts; global average pool + BatchNorm1d(64) + Linear(64, 10).
# 0.27M parameters. conv_cfg=None gives the full-precision twin.
#
# Init as in the authors' ResNet-20 code (preset 'authors-resnet20', see
# skd_bnn_mm/models/backbones/weight_init.py): Kaiming-normal (fan-in, gain
# sqrt 2) conv and linear weights; the linear bias keeps PyTorch's default
# U(-1/8, 1/8) (1/sqrt(64)); BN weight 1 / bias 0. The init used before
# (the same, with a zero linear bias) stays available by name:
#   --cfg-options model.head.init_cfg.preset=kaiming-fan-in
model = dict(
    type='ImageClassifier',
    backbone=dict(type='BNNResNet20CIFAR', conv_cfg=dict(type='IRConv2d'),
                  init_cfg=dict(type='Preset', preset='authors-resnet20')),
    neck=dict(type='PoolBNNeck', in_channels=64, pool='avg', norm=True),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=64,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, ),
        init_cfg=dict(type='Preset', preset='authors-resnet20')))
