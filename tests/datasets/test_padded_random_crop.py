"""PaddedRandomCrop: mmpretrain's RandomCrop with padding_mode honoured."""
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmpretrain.datasets.transforms import RandomCrop
from mmpretrain.registry import TRANSFORMS

import skd_bnn_mm  # noqa: F401
from skd_bnn_mm.datasets import PaddedRandomCrop

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CIFAR_BASE = osp.join(ROOT, 'configs/_base_/datasets/cifar10_bs128.py')


def _image(h=6, w=5, seed=1):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3),
                                               dtype=np.uint8)


def test_edge_padding_replicates_the_border():
    """padding=2, crop = the whole padded image: every padded pixel is the
    nearest border pixel (np.pad 'edge' by hand), none is zero-filled."""
    img = _image()
    out = PaddedRandomCrop((10, 9), padding=2,
                           padding_mode='edge')(dict(img=img))['img']
    want = np.empty((10, 9, 3), np.uint8)
    for y in range(10):
        for x in range(9):
            want[y, x] = img[min(max(y - 2, 0), 5), min(max(x - 2, 0), 4)]
    np.testing.assert_array_equal(out, want)
    # mmpretrain's RandomCrop pads the same call with zeros
    zeros = RandomCrop((10, 9), padding=2,
                       padding_mode='edge')(dict(img=img))['img']
    assert (zeros[0] == 0).all() and not np.array_equal(zeros, want)


@pytest.mark.parametrize('mode', ['edge', 'reflect', 'constant'])
def test_equals_impad_then_crop_and_reaches_every_offset(mode):
    """For a fixed seed each output is mmcv.impad(mode) of the input cropped
    at the offsets RandomCrop's draw gives; over 400 draws every one of the
    (2p+1)^2 offsets occurs."""
    img = _image(8, 8)
    crop = PaddedRandomCrop(8, padding=2, padding_mode=mode, pad_val=7)
    padded = mmcv.impad(img, padding=2, padding_mode=mode, pad_val=7)
    np.random.seed(3)
    outs = [crop(dict(img=img.copy()))['img'] for _ in range(400)]
    np.random.seed(3)
    seen = set()
    for out in outs:
        top, left = np.random.randint(0, 5), np.random.randint(0, 5)
        np.testing.assert_array_equal(out, padded[top:top + 8,
                                                  left:left + 8])
        seen.add((top, left))
    assert seen == {(t, l) for t in range(5) for l in range(5)}
    assert outs[0].shape == (8, 8, 3)


def test_consumes_numpys_generator_like_randomcrop():
    """Same seed, same draws as mmpretrain's RandomCrop (so EpochSeedHook's
    seeding and resumed runs replay the same crops), and the generator is
    left in the same state. With constant padding the pixels are equal
    too; the per-image result records the cropped shape."""
    img = _image(32, 32)
    ours = PaddedRandomCrop(32, padding=4)
    theirs = RandomCrop(32, padding=4)
    for seed in range(5):
        np.random.seed(seed)
        a = [ours(dict(img=img.copy())) for _ in range(20)]
        after_ours = np.random.rand()
        np.random.seed(seed)
        b = [theirs(dict(img=img.copy())) for _ in range(20)]
        assert np.random.rand() == after_ours
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x['img'], y['img'])
            assert x['img_shape'] == (32, 32, 3)
    assert ours.padding == 4  # restored after the delegated crop


def test_pad_if_needed_and_no_padding_as_randomcrop():
    """Without ``padding`` it is RandomCrop: pad_if_needed with the mode,
    and a crop of the image's own size draws nothing."""
    img = _image(4, 4)
    out = PaddedRandomCrop(6, pad_if_needed=True,
                           padding_mode='edge')(dict(img=img))['img']
    np.testing.assert_array_equal(
        out, mmcv.impad(img, padding=(1, 1, 1, 1), padding_mode='edge'))
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    PaddedRandomCrop(4)(dict(img=img))
    assert np.array_equal(np.random.get_state()[1], state)


def test_cifar_config_uses_edge_padding_crop_and_plain_preprocessor():
    """The CIFAR base config: edge-padding crop, flip, mmpretrain's
    preprocessor and stacked batches; the pipeline pads with the border."""
    cfg = Config.fromfile(CIFAR_BASE)
    assert cfg.data_preprocessor.type == 'ClsDataPreprocessor'
    assert cfg.train_dataloader.collate_fn.type == 'default_collate'
    crop, flip, _ = [TRANSFORMS.build(t) for t in cfg.train_pipeline]
    assert isinstance(crop, PaddedRandomCrop)
    assert (crop.crop_size, crop.padding, crop.padding_mode) == \
        ((32, 32), 4, 'edge')
    assert (flip.prob, flip.direction) == (0.5, 'horizontal')
    img = np.full((32, 32, 3), 200, np.uint8)
    np.random.seed(0)
    for _ in range(20):  # a constant image stays constant: no zero border
        assert (crop(dict(img=img.copy()))['img'] == 200).all()


def test_stacked_batches_normalise_bitwise_as_image_lists():
    """default_collate (one tensor per batch, the configs' collate_fn) and
    pseudo_collate (a list of images) give bitwise the same inputs through
    the CIFAR preprocessor."""
    from mmengine.dataset import default_collate, pseudo_collate
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(CIFAR_BASE)
    pipeline = [TRANSFORMS.build(t) for t in cfg.train_pipeline]
    pre = MODELS.build(cfg.data_preprocessor)
    np.random.seed(0)
    items = []
    for seed in range(8):
        results = dict(img=_image(32, 32, seed), gt_label=seed)
        for t in pipeline:
            results = t(results)
        items.append(results)
    a = pre(default_collate(items), True)['inputs']
    b = pre(pseudo_collate(items), True)['inputs']
    assert a.shape == (8, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
