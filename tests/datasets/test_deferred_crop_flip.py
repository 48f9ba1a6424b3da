"""DeferredCropFlip + CropFlipClsDataPreprocessor: the CIFAR augmentation,
drawn per sample in the pipeline and applied per batch on the device."""
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import default_collate, pseudo_collate
from mmpretrain.datasets.transforms import PackInputs, RandomCrop, RandomFlip
from mmpretrain.models.utils import ClsDataPreprocessor
from mmpretrain.registry import MODELS, TRANSFORMS

import skd_bnn_mm  # noqa: F401
from skd_bnn_mm.datasets import DeferredCropFlip
from skd_bnn_mm.models.utils import CropFlipClsDataPreprocessor

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CIFAR_BASE = osp.join(ROOT, 'configs/_base_/datasets/cifar10_bs128.py')
PACK = PackInputs(algorithm_keys=['crop_flip'])


def _images(n, h=32, w=32, seed=1):
    rng = np.random.RandomState(seed)
    return [rng.randint(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _reference(padded, params, padding, size):
    """The crop and flip of ``params`` done on the padded HWC image by
    slicing, as a CHW float tensor."""
    top, left = params['top'] + padding, params['left'] + padding
    want = padded[top:top + size[0], left:left + size[1]]
    if params['flip']:
        want = want[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(want)).permute(2, 0,
                                                                1).float()


def _deferred(images, transform, seed):
    np.random.seed(seed)
    return [PACK(transform(dict(img=im.copy(), gt_label=0)))
            for im in images]


@pytest.mark.parametrize('collate', [pseudo_collate, default_collate])
def test_same_draws_and_pixels_as_mmpretrain_transforms(collate):
    """With the same numpy seed, the deferred draw and the batched crop give
    exactly mmpretrain's RandomCrop(padding=4) + RandomFlip images."""
    images = _images(64)
    np.random.seed(5)
    crop = RandomCrop(crop_size=32, padding=4)
    flip = RandomFlip(prob=0.5, direction='horizontal')
    ref = torch.stack([
        PackInputs()(flip(crop(dict(img=im.copy(), gt_label=0))))['inputs']
        for im in images
    ])
    items = _deferred(images, DeferredCropFlip(32, padding=4), seed=5)
    flips = [it['data_samples'].crop_flip['flip'] for it in items]
    assert 10 < sum(flips) < 54  # both branches exercised
    out = CropFlipClsDataPreprocessor()(collate(items), True)['inputs']
    assert out.dtype == torch.float32
    assert torch.equal(out, ref.float())


@pytest.mark.parametrize('mode', ['constant', 'edge', 'reflect', 'symmetric'])
def test_every_padding_mode_matches_mmcv_impad(mode):
    images = _images(24, h=20, w=18)
    pad_val = (7, 8, 9) if mode == 'constant' else 0
    transform = DeferredCropFlip((22, 16), padding=6, padding_mode=mode,
                                 pad_val=pad_val)
    items = _deferred(images, transform, seed=3)
    out = CropFlipClsDataPreprocessor()(default_collate(items),
                                        True)['inputs']
    assert out.shape == (24, 3, 22, 16)
    for image, item, got in zip(images, items, out):
        p = item['data_samples'].crop_flip
        padded = mmcv.impad(image, padding=6, padding_mode=mode,
                            pad_val=pad_val)
        assert torch.equal(got, _reference(padded, p, 6, (22, 16)))


def _cifar_base():
    cfg = Config.fromfile(CIFAR_BASE)
    pipeline = [TRANSFORMS.build(t) for t in cfg.train_pipeline]
    pre = dict(cfg.data_preprocessor, mean=None, std=None)
    return cfg, pipeline, MODELS.build(pre)


def _run(pipeline, results):
    for t in pipeline:
        results = t(results)
    return results


def test_default_cifar_config_replicates_edges_and_covers_all_crops():
    """The recipe pads with edge replication (mmpretrain's RandomCrop with
    padding_mode='edge' would pad with zeros), reaches all 9x9 offsets with
    near-uniform frequency and flips half of the images."""
    cfg, pipeline, pre = _cifar_base()
    assert cfg.train_dataloader.collate_fn.type == 'default_collate'
    image = np.full((32, 32, 3), 200, np.uint8)
    np.random.seed(0)
    items = [_run(pipeline, dict(img=image.copy(), gt_label=0))
             for _ in range(2000)]
    out = pre(default_collate(items), True)['inputs']
    assert out.shape == (2000, 3, 32, 32)
    assert bool((out == 200).all())  # no padding value other than the edge
    params = [it['data_samples'].crop_flip for it in items]
    counts = np.zeros((9, 9))
    for p in params:
        counts[p['top'] + 4, p['left'] + 4] += 1
    assert counts.min() > 0
    expected = 2000 / 81
    chi2 = ((counts - expected)**2 / expected).sum()
    assert chi2 < 140  # 80 degrees of freedom: p < 1e-4 above 140
    assert 900 < sum(p['flip'] for p in params) < 1100


def test_edge_padding_values():
    """A crop reaching into the padding repeats the border pixels."""
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1).repeat(3, 2)
    item = PACK(dict(img=image, gt_label=0))
    item['data_samples'].set_field(
        dict(top=-2, left=1, flip=True, size=(3, 4), padding_mode='edge',
             pad_val=0), 'crop_flip')
    out = CropFlipClsDataPreprocessor()(default_collate([item]),
                                        True)['inputs'][0, 0]
    # rows -2, -1, 0 all read row 0; columns 1..4 read 1, 2, 3, 3, mirrored
    assert out.tolist() == [[3., 3., 2., 1.]] * 3


def test_samples_without_draws_are_normalised_as_by_mmpretrain():
    cfg, _, _ = _cifar_base()
    test_pipeline = [TRANSFORMS.build(t) for t in cfg.test_pipeline]
    items = [_run(test_pipeline, dict(img=im, gt_label=1))
             for im in _images(8)]
    ours = MODELS.build(cfg.data_preprocessor)
    plain = ClsDataPreprocessor(**{
        k: v for k, v in cfg.data_preprocessor.items() if k != 'type'})
    for training in (False, True):
        a = ours(default_collate(items), training)['inputs']
        b = plain(pseudo_collate(items), training)['inputs']
        assert torch.equal(a, b)  # stacked batch: bitwise the same values


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match='padding_mode must be one of'):
        DeferredCropFlip(32, padding=4, padding_mode='wrap')
    with pytest.raises(ValueError, match='larger than the padded image'):
        DeferredCropFlip(40, padding=2)(dict(img=_images(1)[0]))
    with pytest.raises(ValueError, match='flip_prob'):
        DeferredCropFlip(32, flip_prob=1.5)
    items = _deferred(_images(2), DeferredCropFlip(32, padding=4), seed=0)
    plain = PackInputs()(dict(img=_images(1)[0], gt_label=0))
    with pytest.raises(ValueError, match='every sample or of none'):
        CropFlipClsDataPreprocessor()(default_collate(items + [plain]), True)
    other = _deferred(_images(1), DeferredCropFlip(32, padding=2), seed=0)
    other[0]['data_samples'].crop_flip['padding_mode'] = 'edge'
    with pytest.raises(ValueError, match='share one crop size'):
        CropFlipClsDataPreprocessor()(default_collate(items + other), True)


def test_images_of_different_sizes_are_cropped_one_by_one():
    images = _images(3, h=36, w=36) + _images(2, h=32, w=40, seed=2)
    items = _deferred(images, DeferredCropFlip(32, padding=0), seed=4)
    out = CropFlipClsDataPreprocessor()(pseudo_collate(items), True)['inputs']
    assert out.shape == (5, 3, 32, 32)
    for image, item, got in zip(images, items, out):
        p = item['data_samples'].crop_flip
        assert torch.equal(got, _reference(image, p, 0, (32, 32)))


def test_pad_val_fills_every_channel_and_is_checked():
    image = np.full((4, 4, 3), 9, np.uint8)
    for pad_val, want in ((7, [7, 7, 7]), (127.6, [128, 128, 128]),
                          ((1, 2, 3), [1, 2, 3])):
        item = PACK(dict(img=image, gt_label=0))
        item['data_samples'].set_field(
            dict(top=-1, left=-1, flip=False, size=(2, 2),
                 padding_mode='constant', pad_val=pad_val), 'crop_flip')
        out = CropFlipClsDataPreprocessor()(default_collate([item]),
                                            True)['inputs'][0]
        assert out[:, 0, 0].tolist() == want  # the padded corner
        assert out[:, 1, 1].tolist() == [9, 9, 9]
    with pytest.raises(ValueError, match='does not fit'):
        DeferredCropFlip(4, padding=1, pad_val=300)(dict(img=image))
    with pytest.raises(ValueError, match='does not fit'):
        DeferredCropFlip(4, padding=1, pad_val=-1)(dict(img=image))
    with pytest.raises(ValueError, match='pad_val must be a finite number'):
        DeferredCropFlip(4, padding=1, pad_val='black')
    item = PACK(dict(img=image, gt_label=0))
    item['data_samples'].set_field(
        dict(top=-1, left=-1, flip=False, size=(2, 2),
             padding_mode='constant', pad_val=(1, 2)), 'crop_flip')
    with pytest.raises(ValueError, match='one per channel'):
        CropFlipClsDataPreprocessor()(default_collate([item]), True)


def test_a_resize_after_the_draw_is_refused():
    """The offsets are drawn for the image size DeferredCropFlip saw."""
    pipeline = [DeferredCropFlip(32, padding=4),
                TRANSFORMS.build(dict(type='Resize', scale=(64, 64))), PACK]
    item = _run(pipeline, dict(img=_images(1)[0], gt_label=0))
    with pytest.raises(ValueError, match='must be the last transform'):
        CropFlipClsDataPreprocessor()(default_collate([item]), True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('mode', ['constant', 'edge', 'reflect', 'symmetric'])
def test_crop_flip_batch_on_cuda_equals_cpu(mode):
    from skd_bnn_mm.models.utils import crop_flip_batch
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), generator=g,
                      dtype=torch.uint8)
    top = torch.randint(-4, 5, (64, ), generator=g)
    left = torch.randint(-4, 5, (64, ), generator=g)
    flip = torch.rand(64, generator=g) < 0.5
    want = crop_flip_batch(x, top, left, flip, (32, 32), mode, (1, 2, 3))
    got = crop_flip_batch(x.cuda(), top.cuda(), left.cuda(), flip.cuda(),
                          (32, 32), mode, (1, 2, 3))
    assert torch.equal(got.cpu(), want)
