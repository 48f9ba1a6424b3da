# Binary ResNet-18 for CIFAR-10 (IR-Net / SKD-BNN): full-precision 3x3 stem,
# 16 binary 3x3 convs (IRConv2d), one shortcut per block, full-precision 1x1
# downsample shortcuts; global average pool (4x4) + BatchNorm1d(512) +
# Linear(512, 10). 11.2M parameters. conv_cfg=None gives the full-precision
# twin.
model = dict(
    type='ImageClassifier',
    backbone=dict(type='BNNResNet18CIFAR', conv_cfg=dict(type='IRConv2d')),
    neck=dict(type='PoolBNNeck', in_channels=512, pool='avg', norm=True),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=512,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, ),
        init_cfg=dict(type='Kaiming', layer='Linear', mode='fan_in')))
