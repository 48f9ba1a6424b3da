"""export_1bit.py / export_onnx.py on a checkpoint from a real (tiny) run."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from skd_bnn_mm.deploy import load_1bit, read_1bit
from skd_bnn_mm.utils import load_checkpoint_file

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # tools/ is imported from the checkout
    sys.path.insert(0, ROOT)
from tools.analysis_tools import export_1bit, export_onnx  # noqa: E402
from tools.deploy import export_openvino  # noqa: E402
TINY = osp.join(ROOT, 'tests', 'deploy', 'tiny_skd_bnn_cifar10.py')


class Payload:
    """Pickles into a call of os.system, as a hostile checkpoint would."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


@pytest.fixture(scope='module')
def trained(cifar10_subset, tmp_path_factory):
    """One epoch (2 iterations of 50 images) of the tiny SKD-BNN ResNet-20."""
    root = cifar10_subset(10, 10)
    work = tmp_path_factory.mktemp('tiny_skd')
    env = dict(os.environ, CIFAR10_ROOT=root, CIFAR10_VERIFY_MD5='False',
               PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'), TINY,
         '--work-dir', str(work)], env=env, capture_output=True, text=True,
        cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, work / 'epoch_1.pth'


@pytest.fixture
def data_env(trained, monkeypatch):
    monkeypatch.setenv('CIFAR10_ROOT', trained[0])
    monkeypatch.setenv('CIFAR10_VERIFY_MD5', 'False')
    return trained[1]


def real_batch(root, n=20):
    """Preprocessed CIFAR-10 test images and the inference model's config."""
    from mmengine.config import Config

    from tools.analysis_tools._common import build_data_loader
    cfg = Config.fromfile(TINY)
    loader = build_data_loader(cfg, 'test', batch_size=n)
    return cfg, next(iter(loader))


def test_export_1bit_tool_on_trained_checkpoint(data_env, trained, tmp_path):
    ckpt = data_env
    out = tmp_path / 'tiny.bnn'
    result = export_1bit.main([TINY, str(ckpt), str(out)])
    assert result['max_abs_diff'] == 0
    assert result['binary_convs'] == 18

    header, arrays = read_1bit(str(out))
    # the training wrapper becomes a plain classifier; its bank is dropped
    assert header['model']['type'] == 'ImageClassifier'
    assert 'distill' not in header['model']
    assert not any('soft_label_bank' in k for k in arrays)
    assert header['meta']['classes'][:2] == ['airplane', 'automobile']

    # same predictions as the checkpoint on real test images
    from skd_bnn_mm.deploy import build_inference_model
    cfg, batch = real_batch(trained[0])
    model, _, _ = build_inference_model(cfg, str(ckpt))
    loaded = load_1bit(str(out))
    state = load_checkpoint_file(str(ckpt))
    assert torch.equal(
        model.backbone.layer1[0].conv1.weight,
        state['state_dict']['backbone.layer1.0.conv1.weight'])
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        a = model(data['inputs'], mode='tensor')
        b = loaded(loaded.data_preprocessor(batch, False)['inputs'],
                   mode='tensor')
    assert torch.equal(a, b)


def test_export_onnx_tool_on_trained_checkpoint(data_env, tmp_path):
    pytest.importorskip('onnxruntime')
    out = tmp_path / 'tiny.onnx'
    result = export_onnx.main([TINY, str(data_env), str(out)])
    assert result['max_abs_diff'] < 1e-4
    assert out.stat().st_size > 0


def test_hostile_checkpoint_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': Payload(str(marker))}, evil)
    for tool, out in ((export_1bit, 'x.bnn'), (export_onnx, 'x.onnx'),
                      (export_openvino, 'x.xml')):
        name = tool.__name__.rsplit('.', 1)[-1]
        with pytest.raises(SystemExit, match=f'^{name}: .*allow-list'):
            tool.main([TINY, str(evil), str(tmp_path / out)])
        assert not (tmp_path / out).exists()
    assert not marker.exists()


def test_wrong_checkpoint_is_explained(tmp_path):
    ckpt = tmp_path / 'other.pth'
    torch.save({'state_dict': {'w': torch.zeros(2)}}, ckpt)
    with pytest.raises(ValueError, match='does not match the model'):
        export_1bit.main([TINY, str(ckpt), str(tmp_path / 'x.bnn')])
    assert not (tmp_path / 'x.bnn').exists()
