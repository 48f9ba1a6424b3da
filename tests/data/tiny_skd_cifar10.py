# A deliberately tiny SKD-BNN ResNet-20 (4/8/16 channels, all three SKD-BNN
# losses, EDE, soft-label bank) for fast reliability tests on a CIFAR-10
# subset: batch 32, 3 epochs, deterministic on the CPU.
_base_ = ['../../configs/skd_bnn/skd-bnn_resnet20_1xb128_cifar10.py']
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
    dict(type='SoftLabelBankHook', save_interval=0),
    # data order and augmentation as a function of (seed, epoch, sample):
    # a resumed run draws exactly what an uninterrupted one would
    dict(type='EpochSeedHook'),
    # several processes: average BN statistics, check all hold the same state
    dict(type='RankConsistencyHook'),
]
randomness = dict(seed=0, deterministic=True)
