"""CIFAR10Pickle: the md5 switch and the errors a user sees."""
import os
import shutil

import numpy as np
import pytest
from mmpretrain.registry import DATASETS


def build(root, **kwargs):
    return DATASETS.build(dict(type='CIFAR10Pickle', data_root=root,
                               split='train', download=False, **kwargs))


def test_reads_real_subset_with_switch(cifar10_subset, caplog):
    root = cifar10_subset(20, 10)
    ds = build(root, verify_md5=False)
    assert len(ds) == 200
    labels = np.array([ds.get_data_info(i)['gt_label'] for i in range(200)])
    assert np.bincount(labels).tolist() == [20] * 10
    img = ds.get_data_info(0)['img']
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert ds.metainfo['classes'][0] == 'airplane'
    test = DATASETS.build(dict(type='CIFAR10Pickle', data_root=root,
                               split='test', verify_md5=False))
    assert len(test) == 100


def test_checksum_mismatch_names_switch_and_keeps_files(cifar10_subset):
    root = cifar10_subset(20, 10)
    batch = os.path.join(root, 'cifar-10-batches-py', 'data_batch_1')
    before = open(batch, 'rb').read()
    with pytest.raises(RuntimeError, match='verify_md5=False'):
        DATASETS.build(dict(type='CIFAR10Pickle', data_root=root,
                            split='train', download=True))
    assert open(batch, 'rb').read() == before  # nothing re-downloaded


def test_missing_folder_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        build(str(tmp_path / 'nowhere'))
    msg = str(err.value)
    assert str(tmp_path / 'nowhere') in msg and 'make_cifar10.py' in msg \
        and 'CIFAR10_ROOT' in msg


def test_failed_download_explains(tmp_path, monkeypatch):
    import skd_bnn_mm.datasets.cifar10_pickle as mod

    def offline(*args, **kwargs):
        raise OSError('network unreachable')
    monkeypatch.setattr(mod, 'download_and_extract_archive', offline)
    with pytest.raises(FileNotFoundError, match='download .* failed'):
        DATASETS.build(dict(type='CIFAR10Pickle', data_root=str(tmp_path),
                            split='train'))


def test_incomplete_and_corrupt_copies(cifar10_subset, tmp_path):
    src = cifar10_subset(20, 10)
    root = tmp_path / 'c'
    shutil.copytree(src, root)
    folder = root / 'cifar-10-batches-py'
    (folder / 'data_batch_3').write_bytes(b'not a pickle')
    with pytest.raises(RuntimeError, match='corrupt'):
        build(str(root), verify_md5=False)
    (folder / 'data_batch_3').unlink()
    with pytest.raises(FileNotFoundError, match='incomplete.*data_batch_3'):
        build(str(root), verify_md5=False)


def test_verify_md5_must_be_bool(cifar10_subset):
    with pytest.raises(TypeError, match='True or False'):
        build(cifar10_subset(20, 10), verify_md5='False')
