# Binary VGG-Small for CIFAR-10 (IR-Net / SKD-BNN): full-precision stem conv
# 3->128, five binary conv units (IRConv2d), output 512x4x4 flattened to 8192
# features (no BatchNorm1d) + Linear(8192, 10). 4.66M parameters.
# conv_cfg=None gives the full-precision twin.
model = dict(
    type='ImageClassifier',
    backbone=dict(type='BNNVGGSmall', conv_cfg=dict(type='IRConv2d')),
    neck=dict(type='PoolBNNeck', in_channels=512 * 4 * 4, pool='flatten',
              norm=False),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=512 * 4 * 4,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, ),
        init_cfg=dict(type='Kaiming', layer='Linear', mode='fan_in')))
