"""SyntheticClsDataset: deterministic in-memory images through a pipeline."""
import numpy as np
import pytest
from mmpretrain.registry import DATASETS

import skd_bnn_mm  # noqa: F401


def test_images_labels_seed_and_pipeline():
    cfg = dict(type='SyntheticClsDataset', num_samples=6, img_shape=(3, 5, 7),
               num_classes=3, seed=4,
               pipeline=[dict(type='RandomFlip', prob=1.0,
                              direction='horizontal'),
                         dict(type='PackInputs')])
    ds, again = DATASETS.build(cfg), DATASETS.build(cfg)
    other = DATASETS.build(dict(cfg, seed=5))
    assert len(ds) == 6 and list(ds.metainfo['classes']) == ['0', '1', '2']
    raw = ds.get_data_info(0)
    assert raw['img'].shape == (5, 7, 3) and raw['img'].dtype == np.uint8
    labels = [ds.get_data_info(i)['gt_label'] for i in range(6)]
    assert set(labels) <= {0, 1, 2}
    assert ds.get_cat_ids(2) == [labels[2]]
    assert np.array_equal(raw['img'], again.get_data_info(0)['img'])
    assert not np.array_equal(raw['img'], other.get_data_info(0)['img'])
    packed = ds[0]
    # PackInputs gives CHW; the flip ran on the in-memory image
    assert tuple(packed['inputs'].shape) == (3, 5, 7)
    assert np.array_equal(packed['inputs'].numpy().transpose(1, 2, 0),
                          raw['img'][:, ::-1])
    assert int(packed['data_samples'].gt_label) == labels[0]
    # the pipeline works on a copy: the stored image is unchanged
    assert np.array_equal(ds.get_data_info(0)['img'], raw['img'])


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_samples=0), 'num_samples'),
    (dict(img_shape=(32, 32)), 'img_shape'),
    (dict(num_classes=0), 'num_classes'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DATASETS.build(dict(type='SyntheticClsDataset', **kwargs))
