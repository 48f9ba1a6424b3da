"""The paper's warm-up + cosine schedule, as the runner applies it."""
import json
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import PARAM_SCHEDULERS

from skd_bnn_mm.engine.schedulers import warmup_cosine_factor

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCHEDULES = osp.join(ROOT, 'configs', '_base_', 'schedules')

# (file, E, w, lr, weight decay): the method doc's recipe table
RECIPES = [
    ('cifar10_resnet20_e700.py', 700, 8, 0.1, 1e-4),
    ('cifar10_vgg-small_e600.py', 600, 8, 0.05, 1e-4),
    ('cifar10_resnet18_e800.py', 800, 16, 0.3, 1e-5),
    ('imagenet_resnet18_e128.py', 128, 8, 0.1, 1e-5),
    ('imagenet_resnet18_e128_stage2.py', 128, 0, 0.001, 1e-5),
]


def paper_factor(e, w, E):
    """Written independently of the implementation, from the method doc."""
    if e <= w:
        return (e + 1) / (w + 1)
    return 0.5 * (1 + math.cos(math.pi * (e - w) / (E - w)))


def test_factor_endpoints():
    assert warmup_cosine_factor(0, 8, 700) == pytest.approx(1 / 9)
    assert warmup_cosine_factor(8, 8, 700) == pytest.approx(1.0)
    assert warmup_cosine_factor(9, 8, 700) < 1.0
    assert warmup_cosine_factor(700, 8, 700) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine_factor(0, 0, 128) == pytest.approx(1.0)


@pytest.mark.parametrize('name,E,w,lr,wd', RECIPES)
def test_recipe_files_step_the_paper_curve(name, E, w, lr, wd):
    cfg = Config.fromfile(osp.join(SCHEDULES, name))
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == \
        ('SGD', lr, 0.9, wd)
    assert cfg.train_cfg.max_epochs == E
    sched_cfg = dict(cfg.param_scheduler)
    assert sched_cfg['warmup'] == w and 'end' not in sched_cfg
    sched_cfg['end'] = E  # what the runner fills in from max_epochs
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr, momentum=0.9)
    scheduler = PARAM_SCHEDULERS.build(sched_cfg,
                                       default_args=dict(optimizer=optimizer))
    for epoch in range(E):
        applied = optimizer.param_groups[0]['lr']
        assert applied == pytest.approx(lr * paper_factor(epoch, w, E),
                                        rel=1e-12, abs=1e-15), epoch
        optimizer.step()
        scheduler.step()


def test_bad_arguments():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    with pytest.raises(ValueError, match='end'):
        PARAM_SCHEDULERS.build(dict(type='WarmupCosineLR', warmup=2),
                               default_args=dict(optimizer=optimizer))
    # the message names the config key and the longest warm-up that fits
    with pytest.raises(ValueError, match=r'param_scheduler\.warmup=8 epochs '
                       r'must be shorter .* = 5 epochs.*'
                       r'param_scheduler\.warmup=4 '):
        PARAM_SCHEDULERS.build(dict(type='WarmupCosineLR', warmup=8, end=5),
                               default_args=dict(optimizer=optimizer))
    with pytest.raises(ValueError, match='convert_to_iter_based'):
        PARAM_SCHEDULERS.build(
            dict(type='WarmupCosineLR', warmup=1, end=5,
                 convert_to_iter_based=True),
            default_args=dict(optimizer=optimizer, epoch_length=10))


def test_runner_applies_formula_each_epoch(cifar10_subset, tmp_path):
    """Train the tiny model 6 epochs and read the lr of every logged step."""
    root = cifar10_subset(20, 10)
    env = dict(**__import__('os').environ, CIFAR10_ROOT=root,
               CIFAR10_VERIFY_MD5='False')
    E, w = 6, 2
    subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'),
         osp.join(ROOT, 'tests', 'data', 'tiny_fp_cifar10.py'),
         '--work-dir', str(tmp_path), '--no-validate', '--cfg-options',
         f'train_cfg.max_epochs={E}', f'param_scheduler.warmup={w}',
         'default_hooks.logger.interval=1'],
        check=True, env=env, capture_output=True)
    logs = list(tmp_path.glob('*/vis_data/scalars.json'))
    assert len(logs) == 1
    seen = {}
    for line in logs[0].read_text().splitlines():
        rec = json.loads(line)
        if 'lr' in rec:
            # 200 images / batch 32 = 7 iterations per epoch
            seen.setdefault((rec['iter'] - 1) // 7, set()).add(rec['lr'])
    assert sorted(seen) == list(range(E))
    for epoch, lrs in seen.items():
        assert len(lrs) == 1, f'lr changed inside epoch {epoch}: {lrs}'
        assert lrs.pop() == pytest.approx(0.1 * paper_factor(epoch, w, E),
                                          rel=1e-6)
