"""kill -9 in the middle of an epoch, --resume: bit-exact continuation.

The tiny SKD-BNN config runs with ``randomness=dict(seed=0,
deterministic=True)`` and ``EpochSeedHook``. A run is stopped with SIGKILL
at iteration 3 of epoch 2 (after epoch 1's checkpoint was written) and
resumed with ``--resume``; its final checkpoint must equal that of an
uninterrupted run bit for bit: weights, BN statistics, soft-label bank,
EDE buffers, optimizer and scheduler state.

Why the hook is needed (without it the augmentation of an epoch depends on
how many epochs ran in the process) is shown on real runners in
tests/engine/hooks/test_epoch_seed_hook.py.
"""
import os
import signal
import subprocess
import sys
import time

import torch
from reliability_utils import (EPOCHS, ITERS_PER_EPOCH, TINY, TRAIN, cli_env,
                               load, run_cli, write_config)


def _assert_same_training_state(a, b, skip=()):
    if not skip:
        assert a['meta']['epoch'] == b['meta']['epoch'] == EPOCHS
    assert a['meta']['iter'] == b['meta']['iter'] == EPOCHS * ITERS_PER_EPOCH
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for key, value in a['state_dict'].items():
        if not key.startswith(tuple(skip)):
            assert torch.equal(value, b['state_dict'][key]), key
    oa, ob = a['optimizer'], b['optimizer']
    assert oa['param_groups'] == ob['param_groups']
    assert oa['state'].keys() == ob['state'].keys()
    for idx, state in oa['state'].items():
        for name, value in state.items():
            assert torch.equal(value, ob['state'][idx][name]), (idx, name)
    if skip:  # saved before the epoch-end scheduler step
        a, b = ([{k: v for k, v in sched.items() if k != '_global_step'}
                 for sched in c['param_schedulers']] for c in (a, b))
    else:
        a, b = a['param_schedulers'], b['param_schedulers']
    assert a == b


STALL = '''
custom_imports = dict(imports=['skd_bnn_mm', 'reliability_hooks'],
                      allow_failed_imports=False)
custom_hooks = [
    dict(type='EDEHook', t_min=1e-3, t_max=10.0),
    dict(type='SoftLabelBankHook', save_interval=0),
    dict(type='EpochSeedHook'),
    dict(type='RankConsistencyHook'),
    dict(type='StallHook', epoch=2, iteration={iteration}, marker={marker!r}),
]
'''


def _train_and_kill(config, work, data_root, marker):
    """Start training, wait for the stall, SIGKILL the process."""
    proc = subprocess.Popen([sys.executable, TRAIN, config, '--work-dir',
                             str(work)], env=cli_env(data_root),
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None, 'training ended before the stall'
            assert time.time() < deadline, 'the stall was never reached'
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigkill_mid_epoch_then_resume_is_bit_exact(data_root, reference_run,
                                                    tmp_path):
    work, marker = tmp_path / 'work', tmp_path / 'stalled'
    stalling = write_config(tmp_path, STALL.format(iteration=3,
                                                   marker=str(marker)))
    _train_and_kill(stalling, work, data_root, marker)
    # killed in epoch 2, after epoch 1's checkpoint
    assert (work / 'epoch_1.pth').is_file()
    assert not (work / 'epoch_2.pth').exists()
    assert (work / 'last_checkpoint').read_text().strip().endswith(
        'epoch_1.pth')

    proc = run_cli([TRAIN, TINY, '--work-dir', work, '--resume'], data_root)
    out = proc.stdout + proc.stderr
    assert 'resumed epoch: 1' in out
    assert 'Epoch(train) [1]' not in out and 'Epoch(train) [2][1/7]' in out
    _assert_same_training_state(load(reference_run / 'epoch_3.pth'),
                                load(work / 'epoch_3.pth'))


def test_resume_from_a_mid_epoch_checkpoint_is_bit_exact(
        data_root, reference_run, tmp_path):
    """Iteration checkpoints: the resumed epoch continues where it stopped
    (mmengine's loop would train its first batches again, and count them
    twice in the soft-label bank)."""
    work, marker = tmp_path / 'work', tmp_path / 'stalled'
    every_10 = '''
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=10,
                                     max_keep_ckpts=-1, save_best=None))
'''
    stalling = write_config(tmp_path, every_10 + STALL.format(
        iteration=5, marker=str(marker)), name='stall.py')
    _train_and_kill(stalling, work, data_root, marker)
    # iteration 10 is the 3rd of epoch 2; killed at its 5th
    assert (work / 'last_checkpoint').read_text().strip().endswith(
        'iter_10.pth')
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_10.pth']
    assert int(load(work / 'iter_10.pth')['state_dict'][
        'soft_label_bank.counts'].sum()) > 0  # epoch 2's partial sums

    plain = write_config(tmp_path, every_10, name='plain.py')
    proc = run_cli([TRAIN, plain, '--work-dir', work, '--resume'], data_root)
    out = proc.stdout + proc.stderr
    assert ('Resuming in the middle of epoch 2: its first 96 samples (3 of '
            '7 batches)') in out
    assert 'Epoch(train) [2][3/7]' not in out
    assert 'Epoch(train) [2][4/7]' in out
    # iter_21 is written after the last iteration, before the epoch end
    # folds epoch 3 into the bank: its pending sums must give the bank of
    # the uninterrupted run's epoch_3
    ref, got = load(reference_run / 'epoch_3.pth'), load(work / 'iter_21.pth')
    _assert_same_training_state(ref, got, skip=['soft_label_bank.'])
    ref, got = ref['state_dict'], got['state_dict']
    counts, sums = got['soft_label_bank.counts'], got['soft_label_bank.sums']
    assert torch.equal(counts, ref['soft_label_bank.last_counts'])
    folded = torch.where(counts[:, None] > 0,
                         sums / counts.clamp_min(1)[:, None],
                         got['soft_label_bank.bank'])
    assert torch.equal(folded, ref['soft_label_bank.bank'])
