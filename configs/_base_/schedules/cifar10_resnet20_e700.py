# Recipe of ResNet-20, CIFAR-10 (paper top-1 87.2).
# SGD momentum 0.9, lr 0.1, weight decay 0.0001 on all parameters (as in the
# paper's code), batch 128; per-epoch linear warm-up over 8 epochs then
# cosine to 0 at epoch 700 (see WarmupCosineLR).
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0001))

param_scheduler = dict(type='WarmupCosineLR', warmup=8, begin=0, by_epoch=True)
# `end` is left out: mmengine sets it to train_cfg.max_epochs, so shortening
# max_epochs shortens the cosine too.

# the epoch loop that resumes mid-epoch (any runner, mmpretrain's tools too)
train_cfg = dict(type='SafeEpochBasedTrainLoop', max_epochs=700,
                 val_interval=1)
val_cfg = dict()
test_cfg = dict()
