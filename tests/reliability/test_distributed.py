"""Two CPU processes (tools/dist_train.sh, gloo) on a real CIFAR-10 subset.

1. The paper's tiny SKD-BNN config (BatchNorm, all three losses, random
   augmentation), with iteration checkpoints so that some fall in the middle
   of an epoch: every process ends with the same weights, optimizer state,
   soft-label bank, EDE state and (averaged) BN statistics; the mid-epoch
   checkpoint holds the bank statistics of BOTH processes; only rank 0
   writes files.
2. What "same as one process" means. With 2 processes x 16 images, each
   process normalises and computes losses over its own 16 images. DDP
   averages gradients, so the step equals that of 1 process x 32 images
   exactly when every loss is a mean of per-sample terms and nothing mixes
   samples: true for the cross-entropy and the soft-label KL (batch means),
   and for GroupNorm; false for BatchNorm (batch statistics per process),
   the feature loss (a Frobenius norm over the batch divided by B: the
   average of two square roots is not the root of the sum) and the cluster
   loss (class centres of the batch). So the equivalence run uses
   GroupNorm, CE + soft-label KL, and checks weights, momentum, bank and
   EDE against a single-process run within float tolerance (summation
   order differs). Augmentation stays on: EpochSeedHook seeds each sample
   from (seed, epoch, index), so both runs see the same images.
"""
import math
from pathlib import Path

import pytest
import torch
from reliability_utils import ROOT, TEST, TRAIN, cli_env, load, run_cli, \
    write_config

import subprocess

DIST_TRAIN = str(Path(ROOT) / 'tools' / 'dist_train.sh')


def _dist_train(config, work, data_root, port, *args):
    proc = subprocess.run(
        ['bash', DIST_TRAIN, config, '2', '--work-dir', str(work), *args],
        env=cli_env(data_root, PORT=port), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=300)
    out = proc.stdout  # both streams, in order: shows when a process died
    assert proc.returncode == 0, out[-6000:]
    assert 'terminate called' not in out, out[-6000:]
    return out


def test_processes_agree_and_only_rank0_writes(data_root, tmp_path,
                                               free_port):
    dump = tmp_path / 'dump'
    work = tmp_path / 'work'
    config = write_config(tmp_path, f'''
custom_imports = dict(imports=['skd_bnn_mm', 'reliability_hooks'],
                      allow_failed_imports=False)
custom_hooks = [
    dict(type='EDEHook', t_min=1e-3, t_max=10.0),
    dict(type='SoftLabelBankHook', save_interval=0),
    dict(type='EpochSeedHook'),
    dict(type='RankConsistencyHook'),
    dict(type='RankStateDumpHook', out_dir={str(dump)!r}, at_iters=[5]),
]
# 200 images / (2 x 32): 4 iterations per epoch; iteration 5 is the first
# of epoch 2, so its checkpoint is taken in the middle of an epoch
# (no best checkpoint: mmengine would then also rewrite iter_N after the
# epoch end, but only in epochs whose accuracy is a new best)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=5,
                                     max_keep_ckpts=-1, save_best=None))
''')
    out = _dist_train(config, work, data_root, free_port)
    assert 'gloo' in out and '2 processes' in out
    assert 'Epoch(train) [3][4/4]' in out
    assert out.count('identical on 2 processes') == 3  # after each epoch

    r0, r1 = (load(dump / f'rank{r}.pth') for r in (0, 1))
    # the same model state on both processes (weights, BN statistics,
    # bank, EDE), bit for bit, and the same optimizer state
    assert r0['state_dict'].keys() == r1['state_dict'].keys()
    for key, value in r0['state_dict'].items():
        assert torch.equal(value, r1['state_dict'][key]), key
    for idx, state in r0['optimizer']['state'].items():
        assert torch.equal(state['momentum_buffer'],
                           r1['optimizer']['state'][idx]['momentum_buffer'])
    state = r0['state_dict']
    assert int(state['soft_label_bank.num_updates']) == 3
    assert int(state['soft_label_bank.last_counts'].sum()) > 0
    t = 10**(-3 + 4 * 2 / 3)  # EDE in the last epoch (index 2 of 3)
    assert state['backbone.layer2.1.conv1.ede_t'].item() == \
        pytest.approx(t, rel=1e-6)
    assert state['backbone.layer2.1.conv1.ede_k'].item() == \
        pytest.approx(max(1 / t, 1), rel=1e-6)

    # what rank 0 saved after the last iteration is that state, except what
    # the epoch end changes after it (the bank fold and the BN average); a
    # resume from it repeats the epoch end
    final = load(work / 'iter_12.pth')['state_dict']
    epoch_end = [k for k in state if k.startswith('soft_label_bank.')
                 or k.endswith(('.running_mean', '.running_var'))]
    assert len(epoch_end) > 6
    for key, value in state.items():
        if key not in epoch_end:
            assert torch.equal(final[key], value), key

    # the mid-epoch checkpoint counts the samples of both processes
    p0, p1 = (load(dump / f'rank{r}_iter5.pth') for r in (0, 1))
    assert int(p0['counts'].sum()) > 0 and int(p1['counts'].sum()) > 0
    mid = load(work / 'iter_5.pth')['state_dict']
    assert torch.equal(mid['soft_label_bank.counts'],
                       p0['counts'] + p1['counts'])
    torch.testing.assert_close(mid['soft_label_bank.sums'],
                               p0['sums'] + p1['sums'])

    # one writer: rank 0 opened the checkpoints (through temporary files)
    # and the pointer, rank 1 opened nothing under the work dir
    assert r1['writes'] == []
    written = {Path(p).name for p in r0['writes']}
    assert any('iter_12.pth' in n for n in written)
    assert 'last_checkpoint' in written
    files = [p for p in work.rglob('*') if p.is_file()]
    assert len([p for p in files if p.suffix == '.log']) == 1
    assert not [p for p in files if 'rank' in p.name]


def test_two_processes_equal_one_with_the_same_total_batch(data_root,
                                                           tmp_path,
                                                           free_port):
    config = write_config(tmp_path, '''
# per-sample normalisation and per-sample-mean losses only (see the module
# docstring); 64 images: 2 steps of 32 per epoch
model = dict(
    backbone=dict(norm_cfg=dict(type='GN', num_groups=2)),
    neck=dict(norm=False),
    distill=dict(feat_loss=None, cluster_loss=None))
train_dataloader = dict(dataset=dict(indices=64))
''')
    two, one = tmp_path / 'two', tmp_path / 'one'
    _dist_train(config, two, data_root, free_port, '--no-validate',
                '--cfg-options', 'train_dataloader.batch_size=16')
    run_cli([TRAIN, config, '--work-dir', one, '--no-validate'], data_root)

    a, b = load(one / 'epoch_3.pth'), load(two / 'epoch_3.pth')
    first = load(one / 'epoch_1.pth')['state_dict']
    sa, sb = a['state_dict'], b['state_dict']
    moved = 0
    for key, value in sa.items():
        if key.startswith('soft_label_bank.') or key.endswith(
                ('ede_k', 'ede_t')):
            continue
        torch.testing.assert_close(sb[key], value, rtol=1e-4, atol=1e-5,
                                   msg=key)
        moved += not torch.equal(first[key], value)
    assert moved > 10  # training changed the weights after epoch 1
    for idx, state in a['optimizer']['state'].items():
        torch.testing.assert_close(
            b['optimizer']['state'][idx]['momentum_buffer'],
            state['momentum_buffer'], rtol=1e-4, atol=1e-5)
    # the bank: the same correct samples were counted, the same means
    assert torch.equal(sa['soft_label_bank.last_counts'],
                       sb['soft_label_bank.last_counts'])
    assert int(sa['soft_label_bank.last_counts'].sum()) > 0
    torch.testing.assert_close(sb['soft_label_bank.bank'],
                               sa['soft_label_bank.bank'], rtol=1e-4,
                               atol=1e-6)
    assert int(sb['soft_label_bank.num_updates']) == 3
    # EDE is a function of the epoch only: identical
    for key in sa:
        if key.endswith(('ede_k', 'ede_t')):
            assert torch.equal(sa[key], sb[key]), key
    t = sa['backbone.layer1.0.conv1.ede_t'].item()
    assert math.isclose(t, 10**(-3 + 4 * 2 / 3), rel_tol=1e-6)


def test_validation_of_two_processes_equals_test_of_checkpoint(
        data_root, tmp_path, free_port):
    """Each process keeps BatchNorm statistics of its own batches; the
    RankConsistencyHook of every config (default_runtime) averages them
    before validation and the checkpoint, so the accuracy logged by a
    2-process run is the one tools/test.py gives on the saved file."""
    import re
    work = tmp_path / 'work'
    # no RankConsistencyHook here: the one of default_runtime must do it
    config = write_config(tmp_path, '''
custom_hooks = [dict(type='EDEHook'), dict(type='SoftLabelBankHook'),
                dict(type='EpochSeedHook')]
train_cfg = dict(max_epochs=1)
param_scheduler = dict(warmup=0)
''')
    out = _dist_train(config, work, data_root, free_port)
    assert out.count('identical on 2 processes') == 1
    logged = re.findall(r'Epoch\(val\) \[1\]\[\d+/\d+\]\s+accuracy/top1: '
                        r'([\d.]+)', out)
    assert len(logged) == 1, out[-3000:]
    test = run_cli([TEST, config, work / 'epoch_1.pth', '--work-dir',
                    tmp_path / 'test'], data_root)
    tested = re.findall(r'accuracy/top1: ([\d.]+)', test.stdout + test.stderr)
    assert tested and float(tested[-1]) == float(logged[0]), \
        (logged, tested)
