"""Bad inputs: each fails early with a message that says what is wrong and
what to do, and leaves the checkpoints of the work dir untouched.

Every case runs (in-process: the same code path as tools/train.py, without
a process start) in a copy of a finished 3-epoch run, with ``--resume``
where the case is about resuming, and checks the exception type, the key
phrases of its message, and that no checkpoint or ``last_checkpoint`` of the
work dir changed (size, mtime, sha256) and none was added.
"""
import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import pytest
import reliability_hooks  # noqa: F401  (SampleLogHook)
import torch
from reliability_utils import (EPOCHS, ITERS_PER_EPOCH, ROOT, TINY,
                               build_runner, copy_work_dir, load, snapshot)

from skd_bnn_mm.engine.runner.safe_runner import UnknownTypeError
from skd_bnn_mm.engine.hooks import ede_schedule
from skd_bnn_mm.engine.schedulers import warmup_cosine_factor
from skd_bnn_mm.utils import CheckpointError, atomic_write, is_temp_file


@dataclass
class Case:
    name: str
    error: type
    phrases: Sequence[str]
    overrides: Dict = field(default_factory=dict)
    # prepare(work, data_root, tmp_path) -> extra overrides
    prepare: Optional[Callable] = None
    # patch(runner) before train()
    patch: Optional[Callable] = None


def _empty_data(work, data_root, tmp):
    (tmp / 'empty').mkdir()
    # download=False: no network in tests (with it, a failed download adds
    # its error to the same message)
    return {'train_dataloader.dataset.data_root': str(tmp / 'empty'),
            'train_dataloader.dataset.download': False}


def _corrupt_data(work, data_root, tmp):
    copy = tmp / 'data'
    shutil.copytree(data_root, copy)
    batch = copy / 'cifar-10-batches-py' / 'data_batch_1'
    batch.write_bytes(b'\x80\x04 this is not a pickle' * 100)
    return {'train_dataloader.dataset.data_root': str(copy)}


def _resume(name):
    def prepare(work, data_root, tmp):
        return {'resume': True, 'load_from': str(work / name)}
    return prepare


def _resume_broken(kind):
    def prepare(work, data_root, tmp):
        path = tmp / f'{kind}.pth'
        if kind == 'empty':
            path.write_bytes(b'')
        elif kind == 'truncated':
            data = (work / 'epoch_3.pth').read_bytes()
            path.write_bytes(data[:len(data) // 2])
        elif kind == 'weights_only':
            torch.save(load(work / 'epoch_3.pth')['state_dict'], path)
        return {'resume': True, 'load_from': str(path)}
    return prepare


def _resume_edited(edit, name='epoch_2.pth', resume=True):
    """Resume (or ``load_from``) a copy of ``name`` changed by ``edit``."""
    def prepare(work, data_root, tmp):
        checkpoint = load(work / name)
        edit(checkpoint)
        path = tmp / f'edited_{name}'
        torch.save(checkpoint, path)
        return {'resume': resume, 'load_from': str(path)}
    return prepare


def _set(key, value, index=0):
    def edit(checkpoint):
        checkpoint['state_dict'][key].view(-1)[index] = value
    return edit


def _auto_resume_without(keep_best, pointer):
    """Automatic resume in a work dir whose epoch checkpoints are gone."""
    def prepare(work, data_root, tmp):
        for path in work.glob('epoch_*.pth'):
            path.unlink()
        if not keep_best:
            for path in work.glob('best_*.pth'):
                path.unlink()
        if not pointer:
            (work / 'last_checkpoint').unlink()
        return {'resume': True, 'load_from': None}
    return prepare


def _mid_epoch(checkpoint):
    """What a checkpoint of iteration 18 (the 4th of epoch 3) records."""
    checkpoint['meta'].update(epoch=2, iter=18)
    checkpoint['message_hub']['runtime_info']['epoch_progress'] = dict(
        epoch=2, samples=128, world_size=1, batch_size=32)


def _hooks(*names):
    return {'custom_hooks': [dict(type=n) for n in names]}


def _nan_at_second_call(runner):
    """loss_feat becomes NaN in the 2nd step after resuming at epoch 2."""
    loss = runner.model.feat_loss
    forward, calls = loss.forward, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        value = forward(*args, **kwargs)
        return value * float('nan') if len(calls) == 2 else value

    loss.forward = poisoned


NAN_ITER = 2 * ITERS_PER_EPOCH + 2  # epoch 3, its 2nd iteration

CASES = [
    Case('missing_data', FileNotFoundError,
         ['CIFAR-10 not found', 'data_batch_1', 'CIFAR10_ROOT',
          'make_cifar10.py'], prepare=_empty_data),
    Case('corrupt_data_file', RuntimeError,
         ['CIFAR-10 file', 'is corrupt', 'get the data again'],
         prepare=_corrupt_data),
    Case('checksum_mismatch', RuntimeError,
         ['do not match the official MD5', 'verify_md5=False',
          'CIFAR10_VERIFY_MD5=False'],
         {'train_dataloader.dataset.verify_md5': True}),
    Case('unknown_layer', UnknownTypeError,
         ["unknown type 'IRConv2dd' at model.backbone.conv_cfg.type",
          "did you mean 'IRConv2d'"],
         {'model.backbone.conv_cfg.type': 'IRConv2dd'}),
    Case('unknown_sign', ValueError,
         ["Unknown sign method 'edge'", 'ede, ste, approx'],
         {'model.backbone.conv_cfg.sign': 'edge'}),
    Case('unknown_backbone', UnknownTypeError,
         ["unknown type 'BNNResNet21CIFAR' at model.backbone.type",
          "'BNNResNet20CIFAR'"],
         {'model.backbone.type': 'BNNResNet21CIFAR'}),
    Case('unknown_loss', UnknownTypeError,
         ["unknown type 'SoftLabelKLLos'", "did you mean 'SoftLabelKLLoss'"],
         {'model.distill.label_loss.type': 'SoftLabelKLLos'}),
    Case('unknown_unit_name', ValueError,
         ["unknown unit module name(s) ['layer4.0.act1']",
          'candidate names', 'layer3.2.act2'],
         {'model.distill.units': ['layer4.0.act1']}),
    Case('wrong_num_classes_on_resume', RuntimeError,
         ['Cannot resume from', 'different model', 'head.fc.weight',
          'num_classes', 'load_from'],
         {'model.head.num_classes': 5}, prepare=_resume('epoch_2.pth')),
    Case('empty_checkpoint', CheckpointError,
         ['is empty (0 bytes)', 'Use an earlier checkpoint'],
         prepare=_resume_broken('empty')),
    Case('truncated_checkpoint', CheckpointError,
         ['truncated or corrupt', 'use an earlier checkpoint'],
         prepare=_resume_broken('truncated')),
    Case('missing_checkpoint', CheckpointError,
         ['does not exist', '--resume'],
         prepare=_resume_broken('missing')),
    Case('not_a_training_checkpoint', CheckpointError,
         ['not a training checkpoint', 'load_from'],
         prepare=_resume_broken('weights_only')),
    Case('nan_loss', FloatingPointError,
         [f'loss_feat is nan at epoch {EPOCHS}, iteration {NAN_ITER}',
          'Lower the learning rate', 'resume from an earlier checkpoint'],
         prepare=_resume('epoch_2.pth'), patch=_nan_at_second_call),
    Case('negative_temperature', ValueError,
         ['SoftLabelKLLoss', 'temperature must be finite and >= 0', '-4'],
         {'model.distill.label_loss.temperature': -4.0}),
    Case('negative_loss_weight', ValueError,
         ['LabelClusterLoss', 'loss_weight must be finite and >= 0'],
         {'model.distill.cluster_loss.loss_weight': -0.01}),
    Case('ede_t_min_not_below_t_max', ValueError,
         ['EDEHook needs 0 < t_min < t_max', 't_min=10.0', 't_max=1.0'],
         {'custom_hooks.0.t_min': 10.0, 'custom_hooks.0.t_max': 1.0}),
    Case('warmup_longer_than_schedule', ValueError,
         ['warmup', '5', 'must be shorter than the schedule'],
         {'param_scheduler.warmup': 5}),
    Case('no_convolution_to_binarize', ValueError,
         ['has no nn.Conv2d module to binarise'],
         {'model.backbone': dict(_delete_=True, type='BinarizedBackbone',
                                 backbone=dict(type='PoolBNNeck',
                                               in_channels=16))}),
    # an exploding (still finite) loss stops before anything is saved
    Case('exploding_loss', FloatingPointError,
         [f'loss_cls is ', 'above max_loss=100000 (exploding) at epoch '
          f'{EPOCHS}, iteration {2 * ITERS_PER_EPOCH + 1}',
          'logits that overflow', 'nothing was saved after it'],
         {'model.head.loss.loss_weight': 1e6},
         prepare=_resume('epoch_2.pth')),
    # state that a checkpoint must never hold
    Case('nan_in_model_weight', CheckpointError,
         ['backbone.layer2.0.conv1.weight holds 1 NaN/inf value(s)',
          'diverged',
          'use an earlier checkpoint'],
         prepare=_resume_edited(_set('backbone.layer2.0.conv1.weight',
                                     float('nan')))),
    Case('inf_in_bank', CheckpointError,
         ['soft_label_bank.bank holds 1 NaN/inf value(s) of 100'],
         prepare=_resume_edited(_set('soft_label_bank.bank',
                                     float('inf'), 7))),
    Case('negative_bank_count', CheckpointError,
         ['soft_label_bank.counts is negative (-3)', 'a count cannot be'],
         prepare=_resume_edited(_set('soft_label_bank.counts', -3))),
    Case('negative_num_updates', CheckpointError,
         ['soft_label_bank.num_updates is negative (-1)'],
         prepare=_resume_edited(_set('soft_label_bank.num_updates', -1))),
    Case('nan_weight_in_load_from', CheckpointError,
         ['Cannot load', 'head.fc.bias holds 1 NaN/inf'],
         prepare=_resume_edited(_set('head.fc.bias', float('nan')),
                                resume=False)),
    Case('epoch_past_max_epochs', CheckpointError,
         ['saved at epoch 3, past the config\'s 2',
          'raise train_cfg.max_epochs above 3', 'tools/test.py'],
         {'train_cfg.max_epochs': 2}, prepare=_resume('epoch_3.pth')),
    # hooks that do not fit the model
    Case('no_ede_hook', ValueError,
         ['IRConv2d layers with sign="ede" but no EDEHook',
          "dict(type='EDEHook'"],
         _hooks('SoftLabelBankHook', 'EpochSeedHook')),
    Case('no_bank_hook', ValueError,
         ['SoftLabelBank but no SoftLabelBankHook', 'loss_label would stay 0',
          "dict(type='SoftLabelBankHook')"],
         _hooks('EDEHook', 'EpochSeedHook')),
    Case('two_ede_hooks', ValueError,
         ['2 EDEHook hooks are registered', 'Keep one'],
         _hooks('EDEHook', 'EDEHook', 'SoftLabelBankHook')),
    Case('num_classes_below_labels', ValueError,
         ['model.head.num_classes=5', 'labels up to 9',
          'set model.head.num_classes=10'],
         {'model.head.num_classes': 5,
          'model.data_preprocessor.num_classes': 5}),
    Case('last_batch_of_one_sample', ValueError,
         ['would hold 1 sample (200 samples per process, batch_size 199)',
          'train_dataloader.drop_last=True'],
         {'train_dataloader.batch_size': 199}),
    # automatic resume never starts over next to checkpoints
    Case('auto_resume_pointer_to_deleted_file', CheckpointError,
         ['names', 'epoch_3.pth', 'which does not exist',
          'Not starting over', 'nothing was changed'],
         prepare=_auto_resume_without(keep_best=False, pointer=True)),
    Case('auto_resume_only_best_checkpoint', CheckpointError,
         ['the work dir holds only', 'best_accuracy_top1_epoch_',
          'Not starting over', '--resume PATH'],
         prepare=_auto_resume_without(keep_best=True, pointer=False)),
    # a mid-epoch checkpoint (128 samples done) and 48 samples per step
    Case('mid_epoch_resume_other_batch', ValueError,
         ['Cannot resume in the middle of epoch 3',
          'after 128 samples of it (1 process(es) x batch 32)',
          '1 process(es) x batch 48 = 48 samples',
          'train some images twice or never'],
         {'train_dataloader.batch_size': 48},
         prepare=_resume_edited(_mid_epoch)),
]


@pytest.mark.parametrize('case', CASES, ids=[c.name for c in CASES])
def test_bad_input(case, reference_run, data_root, tmp_path):
    work = copy_work_dir(reference_run, tmp_path / 'work')
    overrides = dict(case.overrides)
    if case.prepare is not None:
        overrides.update(case.prepare(work, data_root, tmp_path))
    before = snapshot(work)
    with pytest.raises(case.error) as info:
        runner = build_runner(work, data_root, **overrides)
        if case.patch is not None:
            case.patch(runner)
        runner.train()
    message = str(info.value)
    for phrase in case.phrases:
        assert phrase in message, f'{phrase!r} not in: {message}'
    assert snapshot(work) == before


# --- runs in a fresh work dir: faults during training, resume semantics ---

IRNET = str(Path(ROOT) / 'tests' / 'data' / 'tiny_irnet_cifar10.py')


@dataclass
class RunCase:
    """A run in an empty work dir (``resume_from``: with ``--resume`` of a
    checkpoint of the reference run). ``error=None``: the run succeeds and
    ``phrases`` are looked for in its log. ``patch(runner, work, state,
    monkeypatch)`` may record ``state['before']``, the work dir's snapshot
    at the moment of the fault (default: empty, or the reference run's)."""
    name: str
    error: Optional[type]
    phrases: Sequence[str]
    overrides: Dict = field(default_factory=dict)
    config: str = TINY
    resume_from: Optional[str] = None
    patch: Optional[Callable] = None
    # check(work, runner, reference_run, data_root)
    check: Optional[Callable] = None


def _enospc_at_second_epoch_save(runner, work, state, monkeypatch):
    """The disk fills up while epoch_2.pth is written (after some bytes)."""
    from skd_bnn_mm.utils.atomic_backend import AtomicLocalBackend
    original = AtomicLocalBackend.put

    def failing(self, obj, filepath):
        if Path(filepath).name != 'epoch_2.pth':
            return original(self, obj, filepath)
        state['before'] = snapshot(work)
        with atomic_write(str(filepath)) as f:
            f.write(obj[:4096])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(AtomicLocalBackend, 'put', failing)


def _after_disk_full(work, runner, reference_run, data_root):
    names = sorted(p.name for p in work.iterdir())
    assert 'epoch_1.pth' in names and 'epoch_2.pth' not in names, names
    assert not [n for n in names if is_temp_file(n)], names
    assert (work / 'last_checkpoint').read_text().strip() == str(
        work / 'epoch_1.pth')
    # the automatic resume continues from the epoch that was kept
    again = build_runner(work, data_root, **{
        'resume': True, 'train_cfg.max_epochs': 2, 'log_level': 'INFO',
        'default_hooks.checkpoint.max_keep_ckpts': 1})
    again.train()
    assert again.epoch == 2
    assert f'Automatic resume from "{work / "epoch_1.pth"}"' in _log(work)
    assert load(work / 'epoch_2.pth')['meta']['epoch'] == 2


def _nan_head_loss_at_call(n):
    """The head's loss is NaN at its ``n``-th call (after a checkpoint)."""
    def patch(runner, work, state, monkeypatch):
        module = runner.model.head.loss_module
        forward, calls = module.forward, []

        def poisoned(*args, **kwargs):
            calls.append(1)
            value = forward(*args, **kwargs)
            if len(calls) == n:
                state['before'] = snapshot(work)
                return value * float('nan')
            return value

        module.forward = poisoned
    return patch


def _log(work):
    return '\n'.join(p.read_text() for p in Path(work).glob('*/*.log'))


def _resumes_work_dir_next_time(work, runner, reference_run, data_root):
    assert runner.epoch == 1 and (work / 'epoch_1.pth').is_file()
    # now the work dir has a checkpoint: it is resumed, load_from is not used
    again = build_runner(work, data_root, **{
        'resume': 'auto', 'load_from': str(reference_run / 'epoch_3.pth'),
        'train_cfg.max_epochs': 1, 'param_scheduler.warmup': 0,
        'log_level': 'INFO'})
    again.train()
    log = _log(work)
    assert f'Automatic resume from "{work / "epoch_1.pth"}"' in log
    assert 'training is complete, nothing is trained' in log


def _schedule_of(max_epochs, base_lr, epoch):
    def check(work, runner, reference_run, data_root):
        assert runner.epoch == max_epochs
        hub = runner.message_hub
        lr = base_lr * warmup_cosine_factor(epoch, 1, max_epochs)
        # the lr and EDE of the resumed epoch follow the config being run
        assert hub.get_scalar('train/lr').current() == pytest.approx(
            lr, rel=1e-9, abs=1e-15)
        _, t = ede_schedule(epoch, max_epochs)
        assert hub.get_scalar('train/ede_t').current() == pytest.approx(t)
    return check


RUN_CASES = [
    RunCase('disk_full_at_second_save', OSError,
            ['Could not write checkpoint', 'epoch_2.pth',
             'No space left on device', 'Nothing was removed',
             'continue with --resume'],
            {'default_hooks.checkpoint.max_keep_ckpts': 1},
            patch=_enospc_at_second_epoch_save, check=_after_disk_full),
    RunCase('irnet_learning_rate_1e3', FloatingPointError,
            ['loss is ', 'above max_loss=100000 (exploding) at epoch 1, '
             'iteration 3', 'cross-entropy', 'Lower the learning rate'],
            {'optim_wrapper.optimizer.lr': 1e3}, config=IRNET),
    RunCase('irnet_nan_loss_after_a_checkpoint', FloatingPointError,
            [f'loss is nan at epoch 2, iteration {ITERS_PER_EPOCH + 3}',
             'nothing was saved after it'],
            {'default_hooks.checkpoint.max_keep_ckpts': 1}, config=IRNET,
            patch=_nan_head_loss_at_call(ITERS_PER_EPOCH + 3)),
    RunCase('bare_resume_in_new_work_dir_uses_load_from', None,
            ['no checkpoint in', "starting from the config's load_from",
             'weights only, a new run'],
            {'train_cfg.max_epochs': 1, 'param_scheduler.warmup': 0},
            resume_from='auto',
            check=_resumes_work_dir_next_time),
    RunCase('resume_with_longer_schedule', None,
            ['with a config that differs from the checkpoint',
             'param_scheduler 0 (WarmupCosineLR) end: 3 -> 4',
             'total: 3 -> 4'],
            {'train_cfg.max_epochs': 4}, resume_from='epoch_3.pth',
            check=_schedule_of(4, 0.1, 3)),
    RunCase('resume_with_other_learning_rate', None,
            ['optimizer group 0 initial_lr: 0.1 -> 0.05',
             'base_values: [0.1] -> [0.05]'],
            {'optim_wrapper.optimizer.lr': 0.05}, resume_from='epoch_2.pth',
            check=_schedule_of(3, 0.05, 2)),
]


@pytest.mark.parametrize('case', RUN_CASES, ids=[c.name for c in RUN_CASES])
def test_bad_run(case, reference_run, data_root, tmp_path, monkeypatch):
    work = tmp_path / 'work'
    work.mkdir()
    reference = snapshot(reference_run)
    overrides = dict(case.overrides)
    if case.resume_from == 'auto':
        overrides.update(resume='auto',
                         load_from=str(reference_run / 'epoch_3.pth'))
    elif case.resume_from:
        overrides.update(resume=True,
                         load_from=str(reference_run / case.resume_from))
    state = {'before': {}}
    runner = build_runner(work, data_root, config=case.config, **overrides)
    if case.patch is not None:
        case.patch(runner, work, state, monkeypatch)
    if case.error is None:
        runner.train()
        log = _log(work)
        for phrase in case.phrases:
            assert phrase in log, f'{phrase!r} not in the log:\n{log}'
    else:
        with pytest.raises(case.error) as info:
            runner.train()
        message = str(info.value)
        for phrase in case.phrases:
            assert phrase in message, f'{phrase!r} not in: {message}'
        # nothing saved, changed or removed after the fault
        assert snapshot(work) == state['before']
    assert snapshot(reference_run) == reference
    monkeypatch.undo()
    if case.check is not None:
        case.check(work, runner, reference_run, data_root)


# --- another number of processes (torch.multiprocessing.spawn, gloo) -----

def _iteration_checkpoints(interval, out_dir, tag, **extra):
    """1 epoch, iteration checkpoints every ``interval``, sample log."""
    return {'train_cfg.max_epochs': 1, 'param_scheduler.warmup': 0,
            'default_hooks.checkpoint': dict(
                type='SafeCheckpointHook', by_epoch=False, interval=interval,
                max_keep_ckpts=-1, save_best=None),
            'custom_hooks': [
                dict(type='EDEHook'), dict(type='SoftLabelBankHook'),
                dict(type='EpochSeedHook'),
                dict(type='SampleLogHook', out_dir=str(out_dir), tag=tag)],
            'log_level': 'INFO', **extra}


def _spawn_train(world, port, work, data_root, overrides):
    import torch.multiprocessing as mp
    from reliability_spawn import train
    mp.spawn(train, args=(world, port, str(work), str(data_root), overrides),
             nprocs=world, join=True)


def _trained(out_dir, tag, before_iter=None):
    """Sample indices trained (all processes), up to ``before_iter``."""
    import json
    samples = []
    for path in Path(out_dir).glob(f'{tag}_rank*.json'):
        for n, _, idx in json.loads(path.read_text()):
            if before_iter is None or n <= before_iter:
                samples += idx
    return samples


# (name, processes before, checkpoint, processes after, log lines)
WORLD_CASES = [
    ('two_processes_to_one', 2, 'iter_2.pth', 1,
     ['first 128 samples (4 of 7 batches) were trained before the '
      'checkpoint and are skipped', 'iteration counter 2 -> 4']),
    ('one_process_to_two', 1, 'iter_4.pth', 2,
     ['first 128 samples (2 of 4 batches) were trained before the '
      'checkpoint and are skipped', 'iteration counter 4 -> 2']),
]


@pytest.mark.parametrize('case', WORLD_CASES, ids=[c[0] for c in WORLD_CASES])
def test_resume_with_other_world_size(case, data_root, tmp_path, free_port):
    """A mid-epoch checkpoint after 128 of 200 samples, resumed with another
    number of processes: the epoch trains exactly the other 72 samples."""
    _, before, name, after, phrases = case
    logs, first, second = tmp_path / 'samples', tmp_path / 'a', \
        tmp_path / 'b'
    steps = 128 // (32 * before)
    run = _iteration_checkpoints(steps, logs, 'first')
    if before == 1:
        build_runner(first, data_root, **run).train()
    else:
        _spawn_train(before, free_port, first, data_root, run)
    kept = snapshot(first)
    resume = _iteration_checkpoints(100, logs, 'second', resume=True,
                                    load_from=str(first / name))
    if after == 1:
        build_runner(second, data_root, **resume).train()
    else:
        _spawn_train(after, free_port, second, data_root, resume)
    done = _trained(logs, 'first', before_iter=steps)
    rest = _trained(logs, 'second')
    assert len(done) == 128 and len(rest) == 72
    assert sorted(done + rest) == list(range(200))  # each sample once
    log = _log(second)
    for phrase in phrases:
        assert phrase in log, f'{phrase!r} not in the log:\n{log}'
    assert snapshot(first) == kept


def test_stalled_peer_times_out(tmp_path, free_port):
    """A stopped (not dead) process: the other gives up after
    env_cfg.dist_cfg.timeout, not torch's 30 minutes."""
    import torch.multiprocessing as mp
    from reliability_spawn import stalled_peer
    out = tmp_path / 'rank0.txt'
    context = mp.spawn(stalled_peer, args=(2, free_port, 3, str(out)),
                       nprocs=2, join=False)
    try:
        context.processes[0].join(90)
        assert out.is_file(), 'rank 0 still waiting after 90 s'
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join(10)
    seconds, message = out.read_text().split('\n', 1)
    assert float(seconds) < 30, seconds
    assert 'Timed out' in message or 'timeout' in message.lower(), message
