"""The IR-Net binary ResNet-20 config trains end to end on real CIFAR-10.

A short run of ``configs/irnet/irnet_resnet20_1xb128_cifar10.py`` through
``tools/train.py``: 1000 training images, 8 epochs of batch 64 (128 steps),
warm-up 1 epoch, everything else as in the config (binary convs, EDEHook,
SGD lr 0.1, cosine). Measured on 2 cores shared with other jobs (load ~3.5):
86 s; it reaches about 26% top-1 on 500 test images.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'irnet', 'irnet_resnet20_1xb128_cifar10.py')
EPOCHS = 8


@pytest.mark.slow
def test_irnet_resnet20_learns(cifar10_subset, tmp_path):
    root = cifar10_subset(100, 50)
    env = dict(os.environ, CIFAR10_ROOT=root, CIFAR10_VERIFY_MD5='False')
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'), CONFIG,
         '--work-dir', str(tmp_path), '--no-persistent-workers',
         '--cfg-options', f'train_cfg.max_epochs={EPOCHS}',
         f'train_cfg.val_interval={EPOCHS}', 'param_scheduler.warmup=1',
         'train_dataloader.batch_size=64', 'train_dataloader.num_workers=0',
         'val_dataloader.num_workers=0', 'randomness.seed=0',
         'default_hooks.logger.interval=8',
         'default_hooks.checkpoint.interval=1000',
         'default_hooks.checkpoint.save_best=None'],
        env=env, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]

    log = next(tmp_path.glob('*/vis_data/scalars.json'))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    acc = [r['accuracy/top1'] for r in records if 'accuracy/top1' in r]
    assert len(acc) == 1
    # chance is 10%: with 500 test images 20% is over 7 standard errors
    # above it (this run measured ~26%)
    assert acc[-1] > 20.0, acc

    train = [r for r in records if 'loss' in r]
    assert train[-1]['epoch'] == EPOCHS
    first = sum(r['loss'] for r in train[:2]) / 2
    last = sum(r['loss'] for r in train[-2:]) / 2
    assert last < first - 0.3, (first, last)

    # the config's EDEHook ran: t of the last epoch is
    # 10 ** (log10(1e-3) + (log10(10) - log10(1e-3)) * (E - 1) / E)
    t_last = 10 ** (-3 + 4 * (EPOCHS - 1) / EPOCHS)
    assert train[-1]['ede_t'] == pytest.approx(t_last, rel=1e-5)
    assert train[-1]['ede_k'] == pytest.approx(1.0)
    assert train[0]['ede_t'] == pytest.approx(1e-3, rel=1e-5)

    # the trained network is binary: 18 IRConv2d, each with that t saved
    from mmengine.runner.checkpoint import CheckpointLoader
    ckpt = CheckpointLoader.load_checkpoint(
        str(tmp_path / f'epoch_{EPOCHS}.pth'), map_location='cpu')
    ts = [float(v) for k, v in ckpt['state_dict'].items()
          if k.endswith('.ede_t')]
    assert len(ts) == 18
    assert all(t == pytest.approx(t_last, rel=1e-5) for t in ts)
