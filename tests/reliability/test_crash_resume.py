"""kill -9 in the middle of an epoch, --resume: bit-exact continuation.

The tiny SKD-BNN config runs with ``randomness=dict(seed=0,
deterministic=True)`` and ``EpochSeedHook``. A run is stopped with SIGKILL
at iteration 3 of epoch 2 (after epoch 1's checkpoint was written) and
resumed with ``--resume``; its final checkpoint must equal that of an
uninterrupted run bit for bit: weights, BN statistics, soft-label bank,
EDE buffers, optimizer and scheduler state.

The unit tests below show why the hook is needed: without it the
augmentation of an epoch depends on how many epochs ran in the process.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
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


# ---- EpochSeedHook, in isolation -------------------------------------------

def _augmented(dataset, idx):
    """Sample ``idx`` as the model sees it: the pipeline crops and flips."""
    return dataset[idx]['inputs']


def _dataset(data_root):
    from mmengine.config import Config
    from mmpretrain.registry import DATASETS
    cfg = Config.fromfile(TINY).train_dataloader.dataset
    cfg.data_root, cfg.verify_md5 = data_root, False
    return DATASETS.build(cfg)


class _Runner:
    """What EpochSeedHook reads from a runner."""

    def __init__(self, dataset, seed=0):
        from types import SimpleNamespace
        self.seed, self.epoch = seed, 0
        self.train_dataloader = SimpleNamespace(
            dataset=dataset, sampler=SimpleNamespace(seed=None))
        self._randomness_cfg = dict(seed=seed)
        self.logger = SimpleNamespace(warning=print)


def test_augmentation_depends_on_seed_epoch_and_sample_only(data_root):
    from skd_bnn_mm.engine.hooks import EpochSeedHook
    from skd_bnn_mm.engine.hooks.epoch_seed_hook import SeededPipeline

    # without the hook: the same sample in "epoch 2" depends on what was
    # drawn before (an interrupted and resumed run draws differently)
    plain = _dataset(data_root)
    np.random.seed(0)
    _augmented(plain, 5)
    after_one = _augmented(plain, 7)
    np.random.seed(0)
    assert not torch.equal(_augmented(plain, 7), after_one)

    def epoch_draw(dataset, seed, epoch, idx, before=()):
        runner = _Runner(dataset, seed)
        hook = EpochSeedHook()
        hook.before_train(runner)
        for e in range(epoch + 1):  # epochs that ran in this process
            runner.epoch = e
            hook.before_train_epoch(runner)
            for j in before:
                _augmented(dataset, j)
        assert runner.train_dataloader.sampler.seed == seed
        return _augmented(dataset, idx)

    ds = _dataset(data_root)
    x = epoch_draw(ds, 0, 2, 7, before=(1, 2, 3))
    assert isinstance(ds.pipeline, SeededPipeline)
    assert ds.pipeline.transforms  # attributes fall through
    # same (seed, epoch, sample) -> same image, whatever ran before ...
    assert torch.equal(epoch_draw(_dataset(data_root), 0, 2, 7), x)
    # ... and the caller's generators are left where they were
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    _augmented(ds, 4)
    assert np.random.rand() == expected
    # another epoch or another seed -> another augmentation (random crop
    # with 4-pixel padding and flips: a collision over 3 draws would mean
    # the seed is ignored)
    others = [epoch_draw(_dataset(data_root), 0, e, 7) for e in (0, 1)] + \
        [epoch_draw(_dataset(data_root), 1, 2, 7)]
    assert sum(torch.equal(o, x) for o in others) == 0


def test_main_process_generators_follow_seed_and_epoch(data_root):
    from skd_bnn_mm.engine.hooks import EpochSeedHook
    runner = _Runner(_dataset(data_root), seed=3)
    hook = EpochSeedHook(seed_samples=False)
    draws = []
    for epoch in (0, 1, 1):
        torch.rand(5)  # whatever happened before must not matter
        runner.epoch = epoch
        hook.before_train_epoch(runner)
        draws.append((torch.rand(3), np.random.rand(), __import__(
            'random').random()))
    assert torch.equal(draws[1][0], draws[2][0])
    assert draws[1][1:] == draws[2][1:]
    assert not torch.equal(draws[0][0], draws[1][0])
    assert draws[0][1] != draws[1][1]
