# A deliberately tiny SKD-BNN ResNet-20 (4/8/16 channels) for fast tests of
# the deployment and analysis tools: one short epoch on a CIFAR-10 subset.
_base_ = ['../../configs/skd_bnn/skd-bnn_resnet20_1xb128_cifar10.py']
model = dict(
    backbone=dict(stem_channels=4),
    neck=dict(in_channels=16),
    head=dict(in_channels=16))
train_dataloader = dict(batch_size=50, num_workers=0, persistent_workers=False)
val_dataloader = dict(batch_size=100, num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader
param_scheduler = dict(warmup=0)
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
randomness = dict(seed=0)
