# Recipe of ResNet-18, ImageNet stage 2: resumes stage 1 weights, no warm-up (paper top-1 59.7).
# SGD momentum 0.9, lr 0.001, weight decay 1e-05 on all parameters (as in the
# paper's code), batch 256 in total (8 GPUs x 32); per-epoch linear warm-up over 0 epochs then
# cosine to 0 at epoch 128 (see WarmupCosineLR).
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=1e-05))

param_scheduler = dict(type='WarmupCosineLR', warmup=0, begin=0, by_epoch=True)
# `end` is left out: mmengine sets it to train_cfg.max_epochs, so shortening
# max_epochs shortens the cosine too.

# the epoch loop that resumes mid-epoch (any runner, mmpretrain's tools too)
train_cfg = dict(type='SafeEpochBasedTrainLoop', max_epochs=128,
                 val_interval=1)
val_cfg = dict()
test_cfg = dict()
