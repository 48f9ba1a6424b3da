# Binary VGG-Small for CIFAR-10 (IR-Net / SKD-BNN): full-precision stem conv
# 3->128, five binary conv units (IRConv2d), output 512x4x4 flattened to 8192
# features (no BatchNorm1d) + Linear(8192, 10). 4.66M parameters.
# conv_cfg=None gives the full-precision twin.
#
# Init as in the authors' VGG-Small code (preset 'authors-vgg-small', see
# skd_bnn_mm/models/backbones/weight_init.py): every conv
# N(0, sqrt(2 / (k*k*out_channels))) (fan-out; stem std 0.042), the linear
# layer N(0, 0.01) with zero bias, BN weight 1 / bias 0. The Kaiming fan-in
# init used before stays available by name:
#   --cfg-options model.backbone.init_cfg.preset=kaiming-fan-in
#                 model.head.init_cfg.preset=kaiming-fan-in
model = dict(
    type='ImageClassifier',
    backbone=dict(type='BNNVGGSmall', conv_cfg=dict(type='IRConv2d'),
                  init_cfg=dict(type='Preset', preset='authors-vgg-small')),
    neck=dict(type='PoolBNNeck', in_channels=512 * 4 * 4, pool='flatten',
              norm=False),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=512 * 4 * 4,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, ),
        init_cfg=dict(type='Preset', preset='authors-vgg-small')))
