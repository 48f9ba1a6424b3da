"""LoadImageToRGB: files, BGR arrays and CIFAR10Pickle's RGB arrays all
leave it as the same RGB image."""
import numpy as np
import pytest
from mmpretrain.registry import DATASETS, TRANSFORMS
from PIL import Image


def test_file_bgr_array_and_dataset_sample_agree(cifar10_subset, tmp_path):
    ds = DATASETS.build(dict(type='CIFAR10Pickle',
                             data_root=cifar10_subset(2, 2), split='test',
                             verify_md5=False))
    info = ds.get_data_info(5)
    rgb = info['img']
    assert info['channel_order'] == 'rgb'
    path = str(tmp_path / 'a.png')
    Image.fromarray(rgb).save(path)  # PNG: lossless, stored as RGB
    load = TRANSFORMS.build(dict(type='LoadImageToRGB'))
    from_file = load({'img_path': path})
    from_bgr = load({'img': np.ascontiguousarray(rgb[..., ::-1])})
    from_ds = load(dict(info))
    for out in (from_file, from_bgr, from_ds):
        np.testing.assert_array_equal(out['img'], rgb)
        assert out['channel_order'] == 'rgb'
        assert out['img_shape'] == (32, 32) and out['ori_shape'] == (32, 32)
    # the pipeline of a CIFAR config: the same packed input either way
    pack = TRANSFORMS.build(dict(type='PackInputs'))
    assert (pack(from_file)['inputs'] == pack(from_ds)['inputs']).all()


def test_bad_channel_order():
    load = TRANSFORMS.build(dict(type='LoadImageToRGB'))
    with pytest.raises(ValueError, match="channel_order 'hsv'"):
        load({'img': np.zeros((4, 4, 3), np.uint8), 'channel_order': 'hsv'})


def test_config_visualizer_has_no_scope_key():
    """mmpretrain's browse_dataset.py builds UniversalVisualizer(**cfg)."""
    import os.path as osp

    from mmengine.config import Config
    from mmpretrain.visualization import UniversalVisualizer
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(osp.join(
        root, 'configs', 'skd_bnn', 'skd-bnn_resnet20_1xb128_cifar10.py'))
    vis = dict(cfg.visualizer)
    assert vis.pop('type') == 'UniversalVisualizer' and '_scope_' not in vis
    UniversalVisualizer(name='browse_check', **vis)
