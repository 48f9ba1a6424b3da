"""tools/model_converters/skd_bnn_official_to_mm.py on the authors' released
ResNet-20: meta, the top-1 of tools/test.py on the whole bundled test set,
bad inputs, and fine-tuning with load_from."""
import contextlib
import hashlib
import io
import json
import math
import os
import os.path as osp
import pickle
import sys

import pytest
import torch
from official_data import (CHECKPOINT, CONFIGS, ROOT, SHA256,
                           expected_target, official_file)
from tool_cli import run_tool

from skd_bnn_mm.engine.hooks.ede_hook import ede_schedule
from skd_bnn_mm.utils import load_checkpoint_file

if ROOT not in sys.path:  # tools/ is imported from the checkout
    sys.path.insert(0, ROOT)
from tools.model_converters import skd_bnn_official_to_mm  # noqa: E402

CONVERTER = osp.join(ROOT, 'tools', 'model_converters',
                     'skd_bnn_official_to_mm.py')
TRAIN = osp.join(ROOT, 'tools', 'train.py')
TEST = osp.join(ROOT, 'tools', 'test.py')
CONFIG = osp.join(ROOT, CONFIGS['resnet20_cifar10'])
#: the authors' own code with these weights on the bundled JPEG test set
AUTHORS_TOP1 = 78.74


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    src = official_file(CHECKPOINT)
    out = tmp_path_factory.mktemp('official') / 'resnet20_official.pth'
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        skd_bnn_official_to_mm.main([src, str(out), '--model',
                                     'resnet20_cifar10', '--config', CONFIG])
    return src, out, stdout.getvalue()


def test_converted_checkpoint_meta_and_values(converted):
    src, out, stdout = converted
    with open(src, 'rb') as f:
        assert hashlib.sha256(f.read()).hexdigest() == SHA256
    ckpt = load_checkpoint_file(str(out), map_location='cpu')
    assert set(ckpt) == {'state_dict', 'meta'}
    meta = ckpt['meta']
    info = meta['official']
    assert info['sha256'] == SHA256 and info['size'] == osp.getsize(src)
    assert info['released_file'] == \
        'CIFAR-10/ResNet20/saveModel-000/best-checkpoint.th'
    assert info['epoch'] == 698 and meta['epoch'] == 699
    assert info['best_prec1'] == pytest.approx(87.1494, abs=1e-4)
    assert info['tensors'] == 121
    k, t = ede_schedule(698, 700, 1e-3, 10.0)
    assert info['ede']['layers'] == 18
    assert info['ede']['k'] == k == 1.0
    assert info['ede']['t'] == pytest.approx(t, rel=1e-6)
    assert 'soft_label_bank' in info['defaults']
    assert 'loads strictly into the model of' in stdout

    state = ckpt['state_dict']
    source = torch.load(src, map_location='cpu', weights_only=True)
    for key, value in source['state_dict'].items():
        assert torch.equal(state[expected_target('resnet20_cifar10', key)],
                           value), key
    assert len(state) == 121 + 2 * 18 + 6  # + EDE buffers + bank entries


def test_top1_on_the_whole_bundled_test_set(converted, cifar10_subset,
                                            tmp_path):
    """tools/test.py with the paper config: all 10,000 bundled test images
    (1 training image per class: only the test split is read)."""
    _, ckpt, _ = converted
    root = cifar10_subset(1, 1000)
    with open(osp.join(root, 'cifar-10-batches-py', 'test_batch'),
              'rb') as f:
        assert len(pickle.load(f)['labels']) == 10000
    metrics = tmp_path / 'metrics.json'
    run_tool([TEST, CONFIG, ckpt, '--work-dir', tmp_path, '--out', metrics],
             root)
    top1 = json.loads(metrics.read_text())['accuracy/top1']
    assert abs(top1 - AUTHORS_TOP1) <= 0.1, top1


def _bad_source(kind, folder):
    """A bad input of the given kind, and what the error must say."""
    src = official_file(CHECKPOINT)
    path = folder / f'{kind}.th'
    if kind == 'truncated':
        with open(src, 'rb') as f:
            path.write_bytes(f.read()[:osp.getsize(src) // 2])
        return path, [], 'truncated or corrupt'
    if kind == 'other_network':
        return src, ['--model', 'vgg-small_cifar10'], \
            'It is a resnet20_cifar10 checkpoint'
    if kind == 'other_config':
        vgg = osp.join(ROOT, CONFIGS['vgg-small_cifar10'])
        return src, ['--config', vgg], 'source keys without a target'
    if kind == 'pickled_code':
        torch.save({'state_dict': {}, 'hook': os.system}, path)
        return path, [], 'outside the allow-list'
    ckpt = torch.load(src, map_location='cpu', weights_only=True)
    if kind == 'extra_tensor':
        ckpt['state_dict']['module.layer3.2.conv3.weight'] = torch.zeros(
            64, 64, 3, 3)
        expect = 'match no rule (1): layer3.2.conv3.weight [64, 64, 3, 3]'
    else:  # missing_tensor
        del ckpt['state_dict']['module.layer2.0.bn2.running_mean']
        expect = ('not filled by the source (1): '
                  'backbone.layer2.0.bn2.running_mean [32]')
    torch.save(ckpt, path)
    return path, [], expect


@pytest.mark.parametrize('kind', ['other_network', 'other_config',
                                  'truncated', 'extra_tensor',
                                  'missing_tensor', 'pickled_code'])
def test_bad_input_says_what_and_writes_nothing(kind, tmp_path):
    src, extra, expect = _bad_source(kind, tmp_path)
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    dst = out_dir / 'converted.pth'
    args = [str(src), str(dst), '--model', 'resnet20_cifar10'] + extra
    with pytest.raises(SystemExit) as e:  # in-process: no start-up cost
        skd_bnn_official_to_mm.main(args)
    msg = str(e.value.code)
    assert msg.startswith('Error: ') and expect in msg, msg[-2000:]
    assert f'Nothing was written to {dst}' in msg
    assert os.listdir(out_dir) == []  # no output, no temporary file


def test_failed_conversion_keeps_an_existing_output(tmp_path):
    dst = tmp_path / 'converted.pth'
    dst.write_bytes(b'previous result')
    proc = run_tool([CONVERTER, official_file(CHECKPOINT), dst, '--model',
                     'resnet18_cifar10'], check=False)
    assert proc.returncode == 1 and 'It is a resnet20_cifar10' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert dst.read_bytes() == b'previous result'
    assert os.listdir(tmp_path) == ['converted.pth']
    # the source is never overwritten by its own conversion
    src = tmp_path / 'best.th'
    src.write_bytes(open(official_file(CHECKPOINT), 'rb').read())
    with pytest.raises(SystemExit, match='is the source file'):
        skd_bnn_official_to_mm.main([str(src), str(src), '--model',
                                     'resnet20_cifar10'])
    assert hashlib.sha256(src.read_bytes()).hexdigest() == SHA256


@pytest.mark.slow
def test_fine_tuning_from_converted_weights_starts_trained(
        converted, cifar10_subset, tmp_path):
    """load_from=CONVERTED in the paper config: one epoch on 200 images;
    the first iteration's loss is that of a trained network."""
    _, ckpt, _ = converted
    root = cifar10_subset(20, 10)
    proc = run_tool([TRAIN, CONFIG, '--work-dir', tmp_path, '--cfg-options',
                     f'load_from={ckpt}', 'train_cfg.max_epochs=1',
                     'param_scheduler.warmup=0',
                     'default_hooks.logger.interval=1',
                     'train_dataloader.num_workers=0',
                     'train_dataloader.persistent_workers=False',
                     'val_dataloader.num_workers=0',
                     'val_dataloader.persistent_workers=False'], root)
    log = proc.stdout + proc.stderr
    assert f'Load checkpoint from {ckpt}' in log
    assert 'do not match exactly' not in log  # every entry loaded
    scalars = sorted(tmp_path.glob('*/vis_data/scalars.json'))[-1]
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    first = next(r for r in records if 'loss' in r)
    assert first['iter'] == 1
    assert first['loss_cls'] < 0.25 * math.log(10), first
    assert first['loss'] < 0.5 * math.log(10), first
    val = [r for r in records if 'accuracy/top1' in r]
    assert val and val[-1]['accuracy/top1'] > 50
