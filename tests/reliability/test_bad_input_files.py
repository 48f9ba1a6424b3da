"""Bad and hostile data files: ``.bnn`` headers and CIFAR-10 batch files.

Every case checks the error type, the key phrases of its message, that the
files read are unchanged and nothing was written next to them, and, for the
hostile ones, that the payload never ran: each payload would create a marker
file, either by a call (``subprocess.Popen``, ``os.system``) or by importing a
package planted on ``sys.path`` whose import creates it (mmengine's registry
imports a dotted ``type`` and ``pkg.registry`` for an unknown scope).
"""
import hashlib
import json
import os
import os.path as osp
import pickle
import shutil
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pytest
import torch

from skd_bnn_mm.deploy import BNNFormatError, load_1bit, read_1bit

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # tools/ is imported from the checkout
    sys.path.insert(0, ROOT)
TINY = osp.join(ROOT, 'tests', 'deploy', 'tiny_skd_bnn_cifar10.py')
EVIL = 'skd_bnn_planted_pkg'


def snapshot(folder):
    return {p: hashlib.sha256(open(osp.join(folder, p), 'rb').read())
            .hexdigest()
            for p in sorted(os.listdir(folder))}


@pytest.fixture
def marker(tmp_path, monkeypatch):
    """The marker path, and a planted package that creates it on import."""
    path = tmp_path / 'payload_ran'
    pkg = tmp_path / 'site' / EVIL
    pkg.mkdir(parents=True)
    body = f'open({str(path)!r}, "w").close()\n'
    (pkg / '__init__.py').write_text(body)
    (pkg / 'registry.py').write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path / 'site'))
    yield path
    for name in [m for m in sys.modules if m.startswith(EVIL)]:
        del sys.modules[name]


# ----------------------------------------------------------- .bnn headers
def _tiny_backbone(**extra):
    return dict(type='ResNet_CIFAR', depth=18, **extra)


# name -> (header model config given the marker, what the message names)
BNN_CASES = {
    # a call, at the top level and nested
    'popen': (lambda m: dict(type='subprocess.Popen', args=['touch', str(m)]),
              "type 'subprocess.Popen' at the top level"),
    'nested_system': (lambda m: dict(
        type='ImageClassifier',
        backbone=dict(type='os.system', command=f'touch {m}')),
        "type 'os.system' at backbone"),
    'init_cfg': (lambda m: dict(
        type='ImageClassifier', backbone=_tiny_backbone(
            init_cfg=dict(type='subprocess.Popen', args=['touch', str(m)]))),
        "type 'subprocess.Popen' at backbone.init_cfg"),
    # imports of the planted package
    'dotted_import': (lambda m: dict(type=f'{EVIL}.Anything'),
                      f"type '{EVIL}.Anything' at the top level"),
    'unknown_scope': (lambda m: dict(
        type='ImageClassifier',
        backbone=dict(type=f'{EVIL}.ResNet_CIFAR', depth=18)),
        f"type '{EVIL}.ResNet_CIFAR' at backbone"),
    'scope_key': (lambda m: dict(type='ImageClassifier', _scope_=EVIL,
                                 backbone=_tiny_backbone()),
                  f"_scope_ '{EVIL}' at the top level is not a registry "
                  'scope'),
    'non_string_type': (lambda m: dict(type=['os', 'system']),
                        'type at the top level is a list'),
}


def write_bnn(path, model_cfg):
    from safetensors.torch import save_file
    header = dict(format='skd_bnn_mm.bnn', version=1, model=model_cfg,
                  binary_convs={}, meta={})
    save_file({'x': torch.zeros(1)}, str(path),
              metadata={'skd_bnn_mm': json.dumps(header)})


def _export_openvino(path, out):
    mod = pytest.importorskip('tools.deploy.export_openvino')
    mod.main([str(path), str(out / 'model.xml')])


def _bench_inference(path, out):
    mod = pytest.importorskip('tools.analysis_tools.bench_inference')
    mod.main([TINY, str(path), '--backends', 'torch', '--no-memory',
              '--rounds', '1', '--batch', '1', '--threads', '1',
              '--work-dir', str(out)])


READERS = {
    'load_1bit': lambda path, out: load_1bit(str(path)),
    'read_1bit': lambda path, out: read_1bit(str(path)),
    'export_openvino.py': _export_openvino,
    'bench_inference.py': _bench_inference,
}


@pytest.mark.parametrize('reader', sorted(READERS))
@pytest.mark.parametrize('case', sorted(BNN_CASES))
def test_crafted_bnn_never_runs_code(case, reader, marker, tmp_path,
                                     monkeypatch):
    monkeypatch.setenv('CIFAR10_ROOT', str(tmp_path / 'no_data'))
    src = tmp_path / 'files'
    src.mkdir()
    path = src / 'model.bnn'
    build, phrase = BNN_CASES[case]
    write_bnn(path, build(marker))
    before = snapshot(src)
    out = tmp_path / 'out'
    out.mkdir()
    with pytest.raises((BNNFormatError, SystemExit)) as err:
        READERS[reader](path, out)
    msg = str(err.value)
    assert 'refused to build the config stored in the file' in msg
    assert 'never imported from a Python path' in msg and phrase in msg
    assert not marker.exists(), 'the payload ran'
    assert EVIL not in sys.modules
    assert snapshot(src) == before and os.listdir(out) == []


def test_control_mmengine_would_run_the_payload(marker):
    """Without the allow-list the first case does run (the test can fail)."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        proc = MODELS.build(BNN_CASES['popen'][0](marker))
    proc.wait()
    assert marker.exists()


def test_registered_config_still_loads(tmp_path):
    """The allow-list accepts every name a real export writes."""
    from skd_bnn_mm.deploy import inference_config, save_1bit
    from skd_bnn_mm.deploy.convert import build_model
    from mmengine.config import Config
    cfg = inference_config(Config.fromfile(TINY))
    model = build_model(cfg).eval()
    save_1bit(model, str(tmp_path / 'ok.bnn'), cfg)
    x = torch.randn(2, 3, 32, 32)
    loaded = load_1bit(str(tmp_path / 'ok.bnn'))
    with torch.no_grad():
        assert torch.equal(model.extract_feat(x)[-1],
                           loaded.extract_feat(x)[-1])


# ------------------------------------------------------ CIFAR-10 batch files
class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def _edit(name, change):
    def prepare(folder, marker):
        path = osp.join(folder, name)
        with open(path, 'rb') as f:
            entry = pickle.load(f, encoding='latin1')
        change(entry, marker)
        with open(path, 'wb') as f:
            pickle.dump(entry, f, protocol=2)
    return prepare


def _labels_short(entry, marker):
    entry['labels'] = entry['labels'][:-1]


def _label(value):
    def change(entry, marker):
        entry['labels'][3] = value
    return change


def _empty(entry, marker):
    entry['data'] = np.zeros((0, 3072), np.uint8)
    entry['labels'] = []


def _hostile(name):
    def prepare(folder, marker):
        with open(osp.join(folder, name), 'wb') as f:
            pickle.dump({'data': Payload(marker), 'labels': [0]}, f)
    return prepare


@dataclass
class DataCase:
    name: str
    split: str
    prepare: Callable
    phrases: Sequence[str]


DATA_CASES = [
    DataCase('labels_shorter_than_images', 'train',
             _edit('data_batch_2', _labels_short),
             ['data_batch_2', 'holds 4 images but 3 labels',
              'would be shifted']),
    DataCase('label_10', 'test', _edit('test_batch', _label(10)),
             ['test_batch', 'label 10 of image 3',
              'not a class index 0..9']),
    DataCase('label_minus_1', 'train', _edit('data_batch_1', _label(-1)),
             ['data_batch_1', 'label -1 of image 3']),
    DataCase('empty_split', 'test', _edit('test_batch', _empty),
             ['test split', 'has no images', 'test_batch hold 0']),
    DataCase('hostile_batch_file', 'train', _hostile('data_batch_3'),
             ['data_batch_3', 'is corrupt', 'system', 'nothing was run']),
]


@pytest.fixture(scope='module')
def small_cifar(cifar10_subset):
    return cifar10_subset(2, 2)  # 20 train images (4 per file), 20 test


@pytest.mark.parametrize('case', DATA_CASES, ids=lambda c: c.name)
def test_bad_cifar_file(case, small_cifar, marker, tmp_path):
    from mmpretrain.registry import DATASETS
    root = tmp_path / 'cifar'
    shutil.copytree(small_cifar, root)
    folder = root / 'cifar-10-batches-py'
    case.prepare(str(folder), marker)
    before = snapshot(folder)
    with pytest.raises(RuntimeError) as err:
        DATASETS.build(dict(type='CIFAR10Pickle', data_root=str(root),
                            split=case.split, verify_md5=False,
                            download=False))
    msg = str(err.value)
    for phrase in case.phrases:
        assert phrase in msg, (phrase, msg)
    assert not marker.exists(), 'the payload ran'
    assert snapshot(folder) == before
    assert sorted(os.listdir(root)) == ['cifar-10-batches-py']


def test_hostile_meta_file_never_runs(small_cifar, marker, tmp_path):
    """batches.meta only names the classes, which the dataset knows: it is
    not unpickled at all (and would be read with the same allow-list)."""
    from mmpretrain.registry import DATASETS
    root = tmp_path / 'cifar'
    shutil.copytree(small_cifar, root)
    _hostile('batches.meta')(str(root / 'cifar-10-batches-py'), marker)
    ds = DATASETS.build(dict(type='CIFAR10Pickle', data_root=str(root),
                             split='test', verify_md5=False))
    assert len(ds) == 20 and ds.metainfo['classes'][0] == 'airplane'
    assert not marker.exists()


def test_num_classes_smaller_than_labels(small_cifar):
    from mmpretrain.registry import DATASETS, MODELS

    from skd_bnn_mm.datasets import check_labels_fit, model_num_classes
    ds = DATASETS.build(dict(type='CIFAR10Pickle', data_root=small_cifar,
                             split='test', verify_md5=False))
    model = MODELS.build(dict(
        type='ImageClassifier', backbone=_tiny_backbone(),
        head=dict(type='LinearClsHead', num_classes=5, in_channels=512)))
    assert model_num_classes(model) == 5
    with pytest.raises(ValueError) as err:
        check_labels_fit(ds, model_num_classes(model))
    msg = str(err.value)
    assert 'model.head.num_classes=5' in msg and 'labels up to 9' in msg \
        and 'set model.head.num_classes=10' in msg
    check_labels_fit(ds, 10)  # fits: no error
