# A deliberately tiny full-precision CIFAR-10 model for fast tool tests.
_base_ = [
    '../../configs/_base_/datasets/cifar10_bs128.py',
    '../../configs/_base_/schedules/cifar10_resnet20_e700.py',
    '../../configs/_base_/default_runtime.py',
]
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet_CIFAR', depth=18, base_channels=8,
                  stem_channels=8, num_stages=2, out_indices=(1, ),
                  strides=(1, 2), dilations=(1, 1)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=16,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
              topk=(1, )))
train_dataloader = dict(batch_size=32, num_workers=0, persistent_workers=False)
val_dataloader = dict(batch_size=100, num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader
param_scheduler = dict(warmup=1)
train_cfg = dict(max_epochs=4)
default_hooks = dict(logger=dict(interval=2))
randomness = dict(seed=0)
