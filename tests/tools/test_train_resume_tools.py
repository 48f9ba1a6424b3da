"""tools/train.py, --resume, tools/test.py and dist_train.sh from the command line."""
import json
import math
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = osp.join(ROOT, 'tests', 'data', 'tiny_fp_cifar10.py')
TRAIN = osp.join(ROOT, 'tools', 'train.py')
TEST = osp.join(ROOT, 'tools', 'test.py')


def run(args, root, check=True, **kwargs):
    env = dict(os.environ, CIFAR10_ROOT=root, CIFAR10_VERIFY_MD5='False',
               PYTHONPATH=ROOT)
    proc = subprocess.run(args, env=env, capture_output=True, text=True,
                          cwd=ROOT, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} failed:\n{proc.stdout[-3000:]}\n'
                             f'{proc.stderr[-3000:]}')
    return proc


@pytest.fixture(scope='module')
def trained(cifar10_subset, tmp_path_factory):
    """An uninterrupted 4-epoch run of the tiny model."""
    root = cifar10_subset(20, 10)
    work = tmp_path_factory.mktemp('uninterrupted')
    proc = run([sys.executable, TRAIN, TINY, '--work-dir', str(work)], root)
    return root, work, proc


def scalars(work):
    logs = sorted(work.glob('*/vis_data/scalars.json'))
    return [json.loads(line) for line in logs[-1].read_text().splitlines()]


def test_train_logs_eta_and_saves(trained):
    root, work, proc = trained
    assert 'eta:' in proc.stdout + proc.stderr
    for epoch in (2, 3, 4):
        assert (work / f'epoch_{epoch}.pth').is_file()
    assert (work / 'last_checkpoint').read_text().strip().endswith(
        'epoch_4.pth')


def test_resume_restores_optimizer_and_lr(trained, tmp_path):
    """A run stopped after epoch 2 continues at epoch 3 with the same state."""
    root, work, _ = trained
    ckpt = tmp_path / 'epoch_2.pth'
    shutil.copy(work / 'epoch_2.pth', ckpt)
    saved = torch.load(ckpt, weights_only=False)  # our own file, in a test

    from mmengine.config import Config
    from mmpretrain.registry import RUNNERS
    cfg = Config.fromfile(TINY)
    cfg.work_dir = str(tmp_path / 'inspect')
    cfg.resume, cfg.load_from = True, str(ckpt)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = root
        cfg[name].dataset.verify_md5 = False
    runner = RUNNERS.build(cfg)
    runner.load_or_resume()
    assert runner.epoch == 2 and runner.iter == saved['meta']['iter']
    state = runner.optim_wrapper.state_dict()
    assert state['param_groups'][0]['lr'] == \
        saved['optimizer']['param_groups'][0]['lr']
    for idx, buf in saved['optimizer']['state'].items():
        assert torch.equal(state['state'][idx]['momentum_buffer'],
                           buf['momentum_buffer'])
    model_state = runner.model.state_dict()
    for key, value in saved['state_dict'].items():
        assert torch.equal(model_state[key], value), key

    # and from the command line: the next logged epoch is 3, at epoch 3's lr
    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    shutil.copy(ckpt, resumed / 'epoch_2.pth')
    proc = run([sys.executable, TRAIN, TINY, '--work-dir', str(resumed),
                '--resume', str(resumed / 'epoch_2.pth'),
                '--cfg-options', 'train_cfg.max_epochs=4'], root)
    out = proc.stdout + proc.stderr
    assert 'resumed epoch: 2' in out
    assert 'Epoch(train) [1]' not in out and 'Epoch(train) [3]' in out
    records = scalars(resumed)
    lrs = {r['lr'] for r in records if 'lr' in r and r['epoch'] == 3} \
        if any('epoch' in r for r in records) else None
    uninterrupted = {r['lr'] for r in scalars(trained[1])
                     if 'lr' in r and r.get('epoch') == 3}
    assert lrs == uninterrupted and len(lrs) == 1
    assert (resumed / 'epoch_4.pth').is_file()


def test_resume_auto_picks_latest(trained, tmp_path):
    root, work, _ = trained
    shutil.copytree(work, tmp_path / 'w')
    proc = run([sys.executable, TRAIN, TINY, '--work-dir', str(tmp_path / 'w'),
                '--resume', '--cfg-options', 'train_cfg.max_epochs=5'], root)
    out = proc.stdout + proc.stderr
    assert 'resumed epoch: 4' in out and 'Epoch(train) [5]' in out


def test_resume_from_other_model_is_refused(trained, tmp_path):
    root, work, _ = trained
    shutil.copy(work / 'epoch_2.pth', tmp_path / 'epoch_2.pth')
    before = (tmp_path / 'epoch_2.pth').read_bytes()
    proc = run([sys.executable, TRAIN, TINY, '--work-dir', str(tmp_path),
                '--resume', str(tmp_path / 'epoch_2.pth'), '--cfg-options',
                'model.head.num_classes=5'], root, check=False)
    assert proc.returncode != 0
    assert 'different model' in proc.stderr and 'head.fc.weight' in \
        proc.stderr and 'num_classes' in proc.stderr
    assert (tmp_path / 'epoch_2.pth').read_bytes() == before
    assert not (tmp_path / 'epoch_3.pth').exists()


def test_test_tool_on_checkpoint(trained, tmp_path):
    root, work, _ = trained
    out = tmp_path / 'metrics.json'
    run([sys.executable, TEST, TINY, str(work / 'epoch_4.pth'),
         '--work-dir', str(tmp_path), '--out', str(out)], root)
    metrics = json.loads(out.read_text())
    val = [r for r in scalars(work) if 'accuracy/top1' in r]
    assert metrics['accuracy/top1'] == pytest.approx(
        val[-1]['accuracy/top1'])


def test_unknown_config_lists_configs(tmp_path):
    proc = subprocess.run([sys.executable, TRAIN, 'configs/fp/nope.py'],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0
    assert 'does not exist' in proc.stderr and 'configs/' in proc.stderr


def test_amp_without_cuda_trains_with_bf16_autocast(cifar10_subset,
                                                    tmp_path):
    if torch.cuda.is_available():
        pytest.skip('checks the CPU mapping of --amp')
    root = cifar10_subset(20, 10)
    proc = run([sys.executable, TRAIN, TINY, '--work-dir', str(tmp_path),
                '--amp', '--no-validate', '--cfg-options',
                'train_cfg.max_epochs=2'], root)
    assert '--amp on cpu:' in proc.stdout
    assert 'autocast (AutocastOptimWrapper' in proc.stdout
    ckpt = torch.load(tmp_path / 'epoch_2.pth', weights_only=False)
    assert ckpt['meta']['epoch'] == 2
    losses = [s['loss'] for s in scalars(tmp_path) if 'loss' in s]
    assert losses and all(math.isfinite(v) for v in losses)


def test_amp_keeps_other_wrappers_away():
    sys.path.insert(0, ROOT)
    from mmengine.config import Config
    from tools.train import apply_amp
    cfg = Config(dict(optim_wrapper=dict(type='ApexOptimWrapper')))
    with pytest.raises(SystemExit, match='ApexOptimWrapper'):
        apply_amp(cfg)
    if not torch.cuda.is_available():
        cfg = Config(dict(optim_wrapper=dict(type='AmpOptimWrapper',
                                             loss_scale=512.0)))
        apply_amp(cfg)
        assert cfg.optim_wrapper.type == 'AutocastOptimWrapper'
        assert 'loss_scale' not in cfg.optim_wrapper


def test_dist_train_two_processes_on_cpu(cifar10_subset, tmp_path,
                                         free_port):
    root = cifar10_subset(20, 10)
    env = dict(os.environ, CIFAR10_ROOT=root, CIFAR10_VERIFY_MD5='False',
               PYTHON=sys.executable, PORT=str(free_port))
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), TINY, '2',
         '--work-dir', str(tmp_path), '--cfg-options',
         'train_cfg.max_epochs=2'],
        env=env, capture_output=True, text=True, cwd=str(tmp_path),
        timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert 'gloo' in out and '2 processes' in out
    # 200 images over 2 ranks x 32 per step: 4 iterations per epoch
    assert 'Epoch(train) [2][4/4]' in out
    ckpt = torch.load(tmp_path / 'epoch_2.pth', weights_only=False)
    assert ckpt['meta']['epoch'] == 2
