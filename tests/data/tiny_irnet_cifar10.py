# A deliberately tiny IR-Net ResNet-20 (no distillation) with the tiny
# SKD-BNN config's data and schedule: the non-SKD path of the reliability
# tests.
_base_ = ['../../configs/irnet/irnet_resnet20_1xb128_cifar10.py']
model = dict(
    backbone=dict(stem_channels=4),
    neck=dict(in_channels=16),
    head=dict(in_channels=16))
train_dataloader = dict(batch_size=32, num_workers=0, persistent_workers=False)
val_dataloader = dict(batch_size=100, num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader
param_scheduler = dict(warmup=1)
train_cfg = dict(max_epochs=3)
default_hooks = dict(logger=dict(interval=1))
custom_hooks = [
    dict(type='EDEHook', t_min=1e-3, t_max=10.0),
    dict(type='EpochSeedHook'),
]
randomness = dict(seed=0, deterministic=True)
