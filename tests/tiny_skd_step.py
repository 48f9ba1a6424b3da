"""A CPU-sized SKD-BNN model, random batches and a few training steps,
shared by the tests of its training step (layouts, autocast, compile)."""
import copy

import torch
from mmengine.optim import build_optim_wrapper
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

#: SKD-BNN ResNet-20 shrunk for the CPU: 4/8/16 channels, 8x8 images
TINY_SKD = dict(
    type='SKDImageClassifier',
    data_preprocessor=dict(num_classes=10, mean=[125.3, 123.0, 113.9],
                           std=[63.0, 62.1, 66.7], to_rgb=False),
    backbone=dict(type='BNNResNet20CIFAR', stem_channels=4),
    neck=dict(type='PoolBNNeck', in_channels=16, pool='avg', norm=True),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=16,
              loss=dict(type='CrossEntropyLoss')),
    distill=dict(units=r'layer\d+\.\d+\.act\d'))
SGD = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9,
                          weight_decay=1e-4))


def tiny_skd_model(dtype=torch.float32, channels_last=False):
    """``TINY_SKD`` built and initialised from seed 0, in train mode, its
    parameters in ``dtype`` and, with ``channels_last``, converted by
    :func:`~skd_bnn_mm.engine.fast.to_channels_last`."""
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(TINY_SKD))
    model.init_weights()
    model.to(dtype).train()
    if channels_last:
        from skd_bnn_mm.engine.fast import to_channels_last
        to_channels_last(model)
    return model


def random_batches(n=3, bs=8, hw=8):
    """``n`` data batches of random uint8 images and labels (seed 0)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        images = torch.randint(0, 256, (bs, 3, hw, hw), generator=g,
                               dtype=torch.uint8)
        labels = torch.randint(0, 10, (bs, ), generator=g)
        out.append(dict(inputs=list(images.unbind(0)), data_samples=[
            DataSample().set_gt_label(int(y)) for y in labels]))
    return out


def epoch_end(model):
    """What the Runner does between epochs: the bank update, validation
    (eval mode) and train() again."""
    model.soft_label_bank.update(epoch=0)
    model.eval()
    model.train()


def train_steps(model, steps=3, optim_cfg=SGD, epoch_end_after=None):
    """``model.train_step`` on ``random_batches(steps)`` with a fresh optim
    wrapper of ``optim_cfg``; an :func:`epoch_end` after step
    ``epoch_end_after`` (0-based). Returns each step's losses as floats."""
    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(optim_cfg))
    out = []
    for i, batch in enumerate(random_batches(steps)):
        out.append({k: float(v.detach()) for k, v in model.train_step(
            batch, optim_wrapper).items()})
        if i == epoch_end_after:
            epoch_end(model)
    return out
