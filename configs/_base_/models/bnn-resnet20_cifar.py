# Binary ResNet-20 for CIFAR-10 (IR-Net / SKD-BNN): full-precision stem,
# 18 binary 3x3 convs (IRConv2d), a shortcut around every conv, option-A
# shortcuts; global average pool + BatchNorm1d(64) + Linear(64, 10).
# 0.27M parameters. conv_cfg=None gives the full-precision twin.
model = dict(
    type='ImageClassifier',
    backbone=dict(type='BNNResNet20CIFAR', conv_cfg=dict(type='IRConv2d')),
    neck=dict(type='PoolBNNeck', in_channels=64, pool='avg', norm=True),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=64,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, ),
        init_cfg=dict(type='Kaiming', layer='Linear', mode='fan_in')))
