"""SKD-BNN ResNet-20 trained end to end with tools/train.py on real CIFAR-10.

One short CPU run of the paper's config (shortened schedule) must learn,
log the four loss parts, switch the label loss on after the first epoch and
keep the soft-label bank in its checkpoints; a second run resumed from the
last-but-one checkpoint must continue with exactly that bank.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'skd_bnn',
                  'skd-bnn_resnet20_1xb128_cifar10.py')
TRAIN = osp.join(ROOT, 'tools', 'train.py')
EPOCHS = 3
# CPU-sized version of the recipe: fewer epochs (cosine shortened with them),
# no warm-up, batch 32, no worker processes; the bank is dumped every epoch.
OPTIONS = [
    f'train_cfg.max_epochs={EPOCHS}', 'param_scheduler.warmup=0',
    'train_dataloader.batch_size=32', 'val_dataloader.batch_size=200',
    'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False',
    'val_dataloader.persistent_workers=False',
    'default_hooks.logger.interval=5', 'randomness.seed=0',
    'custom_hooks.1.save_interval=1',
]

pytestmark = pytest.mark.slow


def _train(root, work, *extra):
    env = dict(os.environ, CIFAR10_ROOT=root, CIFAR10_VERIFY_MD5='False',
               PYTHONPATH=ROOT, OMP_NUM_THREADS='2')
    proc = subprocess.run(
        [sys.executable, TRAIN, CONFIG, '--work-dir', str(work),
         '--cfg-options', *OPTIONS, *extra],
        env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f'training failed:\n{proc.stdout[-3000:]}\n'
                             f'{proc.stderr[-3000:]}')
    return proc


def _scalars(work):
    logs = sorted(work.glob('*/vis_data/scalars.json'))
    return [json.loads(line) for line in logs[-1].read_text().splitlines()]


def _bank(path):
    from skd_bnn_mm.utils import load_checkpoint_file  # weights_only=True
    state = load_checkpoint_file(str(path))['state_dict']
    return {k[len('soft_label_bank.'):]: v for k, v in state.items()
            if k.startswith('soft_label_bank.')}


@pytest.fixture(scope='module')
def run(cifar10_subset, tmp_path_factory):
    root = cifar10_subset(200, 20)
    work = tmp_path_factory.mktemp('skd_train')
    _train(root, work)
    return root, work


def test_learns_and_logs_every_loss(run):
    _, work = run
    records = _scalars(work)
    train = [r for r in records if 'loss_cls' in r]
    for key in ('loss_cls', 'loss_feat', 'loss_label', 'loss_cluster'):
        assert all(key in r and r[key] == r[key] for r in train), key
    assert all(r['loss_feat'] > 0 and r['loss_cluster'] > 0 for r in train)
    # beta = 0 in the first epoch only
    assert all(r['loss_label'] == 0 for r in train if r['epoch'] == 1)
    assert all(r['loss_label'] > 0 for r in train if r['epoch'] > 1)
    val = [r['accuracy/top1'] for r in records if 'accuracy/top1' in r]
    assert len(val) == EPOCHS
    # 10 classes: chance is 10 %; this run measured 28.5 % after epoch 3
    assert val[-1] >= 20.0, val


def test_bank_updated_before_each_checkpoint(run):
    _, work = run
    for epoch in range(1, EPOCHS + 1):
        bank = _bank(work / f'epoch_{epoch}.pth')
        assert int(bank['num_updates']) == epoch
        assert int(bank['last_epoch']) == epoch - 1
        assert int(bank['counts'].sum()) == 0  # folded in, nothing pending
        assert int(bank['last_counts'].sum()) > 0
        assert torch.isfinite(bank['bank']).all()
        dump = json.loads((work / 'soft_label_bank' /
                           f'epoch_{epoch}.json').read_text())
        assert dump['classes'][0] == 'airplane'
        assert torch.allclose(torch.tensor(list(dump['bank'].values())),
                              bank['bank'])


def test_resume_continues_with_the_checkpointed_bank(run, tmp_path):
    root, work = run
    ckpt = work / f'epoch_{EPOCHS - 1}.pth'
    saved = _bank(ckpt)

    # the bank in memory after resuming is the checkpoint's
    from mmengine.config import Config
    from mmpretrain.registry import RUNNERS
    cfg = Config.fromfile(CONFIG)
    cfg.train_cfg.max_epochs, cfg.param_scheduler.warmup = EPOCHS, 0
    cfg.work_dir = str(tmp_path / 'inspect')
    cfg.resume, cfg.load_from = True, str(ckpt)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = root
        cfg[name].dataset.verify_md5 = False
        cfg[name].num_workers = 0
        cfg[name].persistent_workers = False
    runner = RUNNERS.build(cfg)
    runner.load_or_resume()
    bank = runner.model.soft_label_bank
    assert runner.epoch == EPOCHS - 1
    for key, value in saved.items():
        assert torch.equal(getattr(bank, key), value), key

    # and training from there folds exactly one more epoch into it
    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    _train(root, resumed, '--resume', str(ckpt))
    final = _bank(resumed / f'epoch_{EPOCHS}.pth')
    assert int(final['num_updates']) == EPOCHS
    assert int(final['last_epoch']) == EPOCHS - 1
    records = [r for r in _scalars(resumed) if 'loss_label' in r]
    assert records and all(r['epoch'] == EPOCHS for r in records)
    assert all(r['loss_label'] > 0 for r in records)
