"""visualize.py: every picture is a valid PNG, and the numbers behind it are
right (bank softmax, log parsing, feature shapes)."""
import csv
import json
import os.path as osp
import sys

import numpy as np
import pytest
import torch

from skd_bnn_mm.analysis import load_scalars, load_soft_label_bank

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # tools/ is imported from the checkout
    sys.path.insert(0, ROOT)
from tools.analysis_tools import visualize  # noqa: E402
TINY = osp.join(ROOT, 'tests', 'deploy', 'tiny_skd_bnn_cifar10.py')
CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
           'horse', 'ship', 'truck']


def assert_png(path):
    from matplotlib import image
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    img = image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img.std() > 0  # something was drawn


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """Random weights of the tiny SKD-BNN model, with a known bank."""
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(TINY)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    bank = torch.randn(10, 10, generator=torch.Generator().manual_seed(3))
    model.soft_label_bank.bank.copy_(bank)
    model.soft_label_bank.last_counts.copy_(torch.arange(10))
    path = tmp_path_factory.mktemp('ckpt') / 'random.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=CLASSES))), path)
    return str(path), bank


@pytest.fixture
def data_root(cifar10_subset, monkeypatch):
    root = cifar10_subset(10, 10)
    monkeypatch.setenv('CIFAR10_ROOT', root)
    monkeypatch.setenv('CIFAR10_VERIFY_MD5', 'False')
    return root


def test_tsne(checkpoint, data_root, tmp_path):
    out = tmp_path / 'tsne.png'
    result = visualize.main(['tsne', TINY, checkpoint[0], '--out', str(out),
                             '--max-samples', '40', '--batch-size', '20',
                             '--num-workers', '0'])
    assert result['num_samples'] == 40
    assert result['feature_dim'] == 16  # input of the Linear(16, 10) head
    assert_png(out)


def test_sign_agreement_tool(checkpoint, data_root, tmp_path):
    out, js = tmp_path / 'sign.png', tmp_path / 'sign.json'
    result = visualize.main(['sign-agreement', TINY, checkpoint[0], '--out',
                             str(out), '--num-images', '8', '--json', str(js),
                             '--num-workers', '0'])
    values = json.loads(js.read_text())
    assert len(values) == 18 and values == dict(result['agreement'])
    assert all(0 <= v <= 1 for v in values.values())
    assert list(values)[0] == 'backbone.layer1.0.conv1'
    assert_png(out)


def softmax_t(bank, t):
    return torch.softmax(bank.double() / t, dim=1).numpy()


def test_bank_from_checkpoint(checkpoint, tmp_path):
    path, bank = checkpoint
    out = tmp_path / 'bank.png'
    result = visualize.main(['bank', path, '--out', str(out),
                             '--temperature', '4'])
    np.testing.assert_allclose(result['matrix'], softmax_t(bank, 4),
                               rtol=1e-6)
    np.testing.assert_allclose(result['matrix'].sum(1), 1, rtol=1e-12)
    loaded, classes, counts = load_soft_label_bank(path)
    assert classes == CLASSES and counts.tolist() == list(range(10))
    np.testing.assert_array_equal(loaded, bank.numpy())
    assert_png(out)


def test_bank_from_hook_json_and_csv(checkpoint, tmp_path):
    _, bank = checkpoint
    rows = bank.tolist()
    # the layout SoftLabelBankHook dumps
    dump = tmp_path / 'epoch_50.json'
    dump.write_text(json.dumps(dict(
        epoch=50, classes=CLASSES, correct_counts=[5] * 10,
        bank={c: r for c, r in zip(CLASSES, rows)})))
    table = tmp_path / 'bank.csv'
    with open(table, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow([''] + CLASSES)
        for c, r in zip(CLASSES, rows):
            writer.writerow([c] + r)
    for src in (dump, table):
        out = tmp_path / f'{src.stem}.png'
        result = visualize.main(['bank', str(src), '--out', str(out)])
        np.testing.assert_allclose(result['matrix'], bank.double().numpy(),
                                   rtol=1e-6)
        assert load_soft_label_bank(str(src))[1] == CLASSES
        assert_png(out)


def test_bank_missing_is_explained(tmp_path):
    path = tmp_path / 'plain.pth'
    torch.save(dict(state_dict={'w': torch.zeros(1)}), path)
    with pytest.raises(SystemExit, match='no soft-label bank'):
        visualize.main(['bank', str(path), '--out', str(tmp_path / 'x.png')])


def write_scalars(path, records):
    path.parent.mkdir(parents=True)
    path.write_text('\n'.join(json.dumps(r) for r in records) + '\n')


def test_curves(tmp_path):
    run = tmp_path / 'work' / '20250101_000000' / 'vis_data' / 'scalars.json'
    write_scalars(run, [
        dict(lr=0.1, loss=2.3, loss_cls=2.2, epoch=1, iter=2, step=2,
             time=0.1, data_time=0.01),
        dict(lr=0.1, loss=2.0, loss_cls=1.9, epoch=1, iter=4, step=4,
             time=0.1, data_time=0.01),
        {'accuracy/top1': 20.0, 'step': 1, 'time': 0.1, 'data_time': 0.0},
        # a resumed run repeats iteration 4: the later value wins
        dict(lr=0.05, loss=1.8, loss_cls=1.7, epoch=2, iter=4, step=4,
             time=0.1, data_time=0.01),
        dict(lr=0.05, loss=1.5, loss_cls=1.4, epoch=2, iter=6, step=6,
             time=0.1, data_time=0.01),
        {'accuracy/top1': 35.0, 'step': 2, 'time': 0.1, 'data_time': 0.0},
    ])
    curves = load_scalars(str(tmp_path / 'work'))  # a work dir is found
    assert curves['train']['loss'] == [(2.0, 2.3), (4.0, 1.8), (6.0, 1.5)]
    assert curves['train']['lr'] == [(2.0, 0.1), (4.0, 0.05), (6.0, 0.05)]
    assert curves['val'] == {'accuracy/top1': [(1.0, 20.0), (2.0, 35.0)]}
    assert 'time' not in curves['train']

    other = tmp_path / 'other' / 'vis_data' / 'scalars.json'
    write_scalars(other, [dict(lr=0.2, loss=2.5, iter=1, step=1),
                          {'accuracy/top1': 11.0, 'step': 1}])
    out = tmp_path / 'curves.png'
    result = visualize.main(['curves', str(run), str(other), '--out',
                             str(out), '--labels', 'a', 'b'])
    assert result['keys'] == ['lr', 'loss', 'loss_cls', 'accuracy/top1']
    assert_png(out)
    with pytest.raises(SystemExit, match='not in the logs'):
        visualize.main(['curves', str(run), '--out', str(out), '--keys',
                        'nope'])
    with pytest.raises(SystemExit, match='No scalars.json'):
        visualize.main(['curves', str(tmp_path / 'none'), '--out', str(out)])
