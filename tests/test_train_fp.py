"""The full-precision baseline trains end to end on real CIFAR-10 images."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(ROOT)


@pytest.mark.slow
def test_fp_resnet20_learns(cifar10_subset, tmp_path):
    root = cifar10_subset(100, 50)
    env = dict(os.environ, CIFAR10_ROOT=root, CIFAR10_VERIFY_MD5='False')
    # 1000 images / batch 64 = 16 iterations an epoch, 8 epochs = 128;
    # validation (500 images) only at the end
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'),
         osp.join(ROOT, 'configs', 'fp', 'fp_resnet20_1xb128_cifar10.py'),
         '--work-dir', str(tmp_path), '--no-persistent-workers',
         '--cfg-options', 'train_cfg.max_epochs=8', 'train_cfg.val_interval=8', 'param_scheduler.warmup=1',
         'train_dataloader.batch_size=64', 'train_dataloader.num_workers=0',
         'val_dataloader.num_workers=0', 'randomness.seed=0',
         'default_hooks.logger.interval=8'],
        env=env, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'eta:' in proc.stdout + proc.stderr
    log = next(tmp_path.glob('*/vis_data/scalars.json'))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    acc = [r['accuracy/top1'] for r in records if 'accuracy/top1' in r]
    assert len(acc) == 1
    # chance is 10% (standard error 1.3 points on 500 images); a learning
    # network is far above it after 128 steps
    assert acc[0] >= 25.0, acc
    losses = [r['loss'] for r in records if 'loss' in r]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
