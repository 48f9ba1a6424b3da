"""A CPU-sized SKD-BNN model and random batches, shared by the tests of
its training step (fast paths, compile)."""
import copy

import torch
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


def tiny_skd_model():
    """``TINY_SKD`` built and initialised from seed 0, in train mode."""
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(TINY_SKD))
    model.init_weights()
    return model.train()


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
