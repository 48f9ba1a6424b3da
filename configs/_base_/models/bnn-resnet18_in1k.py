# Binary ResNet-18 for ImageNet-1k (IR-Net / SKD-BNN, Bi-Real style):
# full-precision 7x7/2 stem + 3x3/2 max-pool, 16 binary 3x3 convs (IRConv2d)
# each with its own shortcut, full-precision 1x1 downsample shortcuts
# (avg_down=True: 2x2 average pool before a stride-1 1x1 conv); global
# average pool + BatchNorm1d(512) + Linear(512, 1000). 11.7M parameters.
model = dict(
    type='ImageClassifier',
    backbone=dict(type='BNNResNet18', avg_down=False,
                  conv_cfg=dict(type='IRConv2d')),
    neck=dict(type='PoolBNNeck', in_channels=512, pool='avg', norm=True),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5),
        init_cfg=dict(type='Kaiming', layer='Linear', mode='fan_in')))
