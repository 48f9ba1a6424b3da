"""tools/train.py --amp on a machine without CUDA: bf16 by default, fp16
with dynamic loss scaling for --amp fp16 (scale in the log and the
checkpoints, restored on --resume)."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = osp.join(ROOT, 'tests', 'data', 'tiny_skd_cifar10.py')
TRAIN = osp.join(ROOT, 'tools', 'train.py')
# 40 training images, batches of 8: 5 steps per epoch
OPTIONS = ['train_dataloader.batch_size=8', 'param_scheduler.warmup=0',
           'train_cfg.max_epochs=2']

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason='checks the CPU choices of --amp')


def _train(root, work, *args):
    env = dict(os.environ, CIFAR10_ROOT=root, CIFAR10_VERIFY_MD5='False',
               PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, TRAIN, TINY, '--work-dir', str(work), *args,
         '--cfg-options', *OPTIONS], env=env, cwd=ROOT, capture_output=True,
        text=True)
    if proc.returncode != 0:
        raise AssertionError(f'training failed:\n{proc.stdout[-3000:]}\n'
                             f'{proc.stderr[-3000:]}')
    return proc.stdout + proc.stderr


def _scalars(work):
    logs = sorted(work.glob('*/vis_data/scalars.json'))
    return [json.loads(line) for line in logs[-1].read_text().splitlines()
            if '"loss"' in line]


def _load(path):
    from skd_bnn_mm.utils import load_checkpoint_file  # weights_only=True
    return load_checkpoint_file(str(path))


def _dumped_wrapper(work):
    from mmengine.config import Config
    return Config.fromfile(str(work / osp.basename(TINY))).optim_wrapper


@pytest.fixture(scope='module')
def data_root(cifar10_subset):
    return cifar10_subset(4, 2)


@pytest.fixture(scope='module')
def fp16_run(data_root, tmp_path_factory):
    work = tmp_path_factory.mktemp('amp_fp16')
    return work, _train(data_root, work, '--amp', 'fp16')


def test_bare_amp_trains_in_bf16_on_cpu(data_root, tmp_path):
    out = _train(data_root, tmp_path, '--amp')
    assert '--amp on cpu: bf16 autocast (AutocastOptimWrapper).' in out
    wrapper = _dumped_wrapper(tmp_path)
    assert wrapper.type == 'AutocastOptimWrapper'
    assert wrapper.dtype == 'bfloat16' and 'loss_scale' not in wrapper
    records = _scalars(tmp_path)
    assert len(records) == 10 and all('amp_scale' not in r for r in records)
    assert all(r['loss'] == r['loss'] for r in records)  # finite, logged
    ckpt = _load(tmp_path / 'epoch_2.pth')
    assert 'loss_scaler' not in ckpt['optimizer']


def test_amp_fp16_trains_with_dynamic_loss_scaling(fp16_run):
    work, out = fp16_run
    assert ('--amp on cpu: fp16 autocast (AutocastOptimWrapper, loss scale '
            'dynamic).') in out
    wrapper = _dumped_wrapper(work)
    assert (wrapper.type, wrapper.dtype, wrapper.loss_scale) == (
        'AutocastOptimWrapper', 'float16', 'dynamic')
    records = _scalars(work)
    assert len(records) == 10
    scales = [r['amp_scale'] for r in records]
    skipped = [r['amp_skipped_steps'] for r in records]
    # starts at 2^16; every logged skip halves it (no growth in 10 steps)
    assert all(s == 65536.0 / 2**k for s, k in zip(scales, skipped))
    assert out.count('optimizer step skipped') == skipped[-1]
    assert all(r['loss'] == r['loss'] for r in records)
    # the scaler state is in each checkpoint: the scale after its last step
    for epoch, last in ((1, records[4]), (2, records[9])):
        state = _load(work / f'epoch_{epoch}.pth')['optimizer']['loss_scaler']
        assert state['scale'] == last['amp_scale']
        assert state['growth_interval'] == 2000


def test_amp_fp16_resume_restores_the_scale(fp16_run, data_root, tmp_path):
    work, _ = fp16_run
    saved = _load(work / 'epoch_1.pth')['optimizer']['loss_scaler']
    saved['scale'] = 1024.0  # a scale the run itself never had
    ckpt = _load(work / 'epoch_1.pth')
    ckpt['optimizer']['loss_scaler'] = saved
    torch.save(ckpt, tmp_path / 'epoch_1.pth')
    out = _train(data_root, tmp_path / 'resumed', '--amp', 'fp16',
                 '--resume', str(tmp_path / 'epoch_1.pth'))
    records = _scalars(tmp_path / 'resumed')
    assert len(records) == 5 and all(r['epoch'] == 2 for r in records)
    skipped = [r['amp_skipped_steps'] for r in records]
    assert [r['amp_scale'] for r in records] == [1024.0 / 2**k
                                                 for k in skipped]
    assert 'loss scale 65536' not in out
