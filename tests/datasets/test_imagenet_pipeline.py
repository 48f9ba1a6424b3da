"""The paper's ImageNet pipeline on a tiny ImageNet-layout folder."""
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import DATASETS, MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG = osp.join(ROOT, 'configs', '_base_', 'datasets', 'imagenet_bs32_pca.py')


@pytest.fixture(scope='module')
def tiny_imagenet(cifar10_subset):
    root = cifar10_subset(3, 2, layout='folders')
    if not osp.isdir(osp.join(root, 'val')):
        os.rename(osp.join(root, 'test'), osp.join(root, 'val'))
    return root, sorted(os.listdir(osp.join(root, 'train')))


def build(cfg_dataset, root, classes, **override):
    ds = dict(cfg_dataset, data_root=root, metainfo=dict(classes=classes))
    ds.update(override)
    return DATASETS.build(ds)


def test_config_is_the_papers():
    cfg = Config.fromfile(CFG)
    steps = {t['type']: t for t in cfg.train_pipeline}
    assert steps['RandomResizedCrop']['scale'] == 224
    assert tuple(steps['RandomResizedCrop']['crop_ratio_range']) == (0.08, 1.0)
    assert steps['Lighting']['alphastd'] == 0.1
    assert steps['RandomFlip']['prob'] == 0.5
    test = {t['type']: t for t in cfg.test_pipeline}
    assert test['ResizeEdge']['scale'] == 256
    assert test['CenterCrop']['crop_size'] == 224
    # 8 GPUs x 32 = the paper's 256 images per step
    assert cfg.train_dataloader.batch_size * 8 == 256
    assert cfg.auto_scale_lr.base_batch_size == 256


def test_train_and_val_samples(tiny_imagenet):
    root, classes = tiny_imagenet
    cfg = Config.fromfile(CFG)
    train = build(cfg.train_dataloader.dataset, root, classes)
    assert len(train) == 30
    sample = train[0]
    assert sample['inputs'].shape == (3, 224, 224)
    assert sample['inputs'].dtype == torch.uint8
    val = build(cfg.val_dataloader.dataset, root, classes)
    assert len(val) == 20
    a, b = val[3]['inputs'], val[3]['inputs']
    assert a.shape == (3, 224, 224) and torch.equal(a, b)  # deterministic


def test_lighting_noise_is_applied(tiny_imagenet):
    root, classes = tiny_imagenet
    cfg = Config.fromfile(CFG)
    # the flip draws after the noise: leave it out so both crops match
    pipe = [dict(t) for t in cfg.train_pipeline if t['type'] != 'RandomFlip']
    no_light = [t for t in pipe if t['type'] != 'Lighting']
    with_light = build(cfg.train_dataloader.dataset, root, classes,
                       pipeline=pipe)
    without = build(cfg.train_dataloader.dataset, root, classes,
                    pipeline=no_light)
    np.random.seed(3)
    x = with_light[5]['inputs']
    np.random.seed(3)
    y = without[5]['inputs']
    assert x.shape == y.shape
    assert not torch.equal(x, y)
    # PCA noise shifts each colour channel by a constant before clipping
    diff = x.float() - y.float()
    inner = (x > 5) & (x < 250) & (y > 5) & (y < 250)
    for c in range(3):
        vals = diff[c][inner[c]]
        assert vals.numel() > 100
        assert vals.max() - vals.min() <= 1.0  # rounding only


def test_batch_through_preprocessor(tiny_imagenet):
    root, classes = tiny_imagenet
    cfg = Config.fromfile(CFG)
    train = build(cfg.train_dataloader.dataset, root, classes)
    pre = MODELS.build(dict(type='ClsDataPreprocessor',
                            **cfg.data_preprocessor))
    batch = pre(dict(inputs=[train[i]['inputs'] for i in range(4)],
                     data_samples=[train[i]['data_samples']
                                   for i in range(4)]), training=True)
    assert batch['inputs'].shape == (4, 3, 224, 224)
    assert batch['inputs'].dtype == torch.float32
    assert abs(batch['inputs'].mean().item()) < 3
