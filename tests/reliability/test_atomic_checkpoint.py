"""Atomic checkpoint writes, and what an automatic resume picks.

A save killed half-way must never leave a truncated file under a checkpoint
name (mmengine writes in place: the control case below shows the truncated
file it leaves), and ``--resume`` must not crash obscurely on a bad latest
file: it falls back to the newest readable checkpoint and says so, or stops
with a clear error when none can be read.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from reliability_utils import build_runner, cli_env, copy_work_dir, snapshot

from skd_bnn_mm.engine.runner.checkpoint_files import resume_candidates
from skd_bnn_mm.utils import (CorruptCheckpointError, atomic_write,
                              atomic_write_bytes, is_temp_file)
from skd_bnn_mm.utils.atomic_io import stale_temp_files


def test_failed_block_keeps_the_old_file(tmp_path):
    target = tmp_path / 'epoch_1.pth'
    atomic_write_bytes(str(target), b'old')
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(str(target)) as f:
            f.write(b'new, half')
            raise KeyboardInterrupt
    assert target.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['epoch_1.pth']  # temp file removed
    with pytest.raises(ValueError, match="mode 'w' or 'wb'"):
        with atomic_write(str(target), 'a'):
            pass


def test_sigkill_during_a_write(reference_run, data_root, tmp_path):
    """A process killed in the middle of writing a checkpoint."""
    target, marker = tmp_path / 'epoch_3.pth', tmp_path / 'writing'
    shutil.copy(reference_run / 'epoch_2.pth', target)  # the "old" file
    old = target.read_bytes()
    new = (reference_run / 'epoch_3.pth').read_bytes()
    script = (
        'import sys, time\n'
        'from skd_bnn_mm.utils import atomic_write\n'
        'target, source, marker = sys.argv[1:4]\n'
        'data = open(source, "rb").read()\n'
        'with atomic_write(target) as f:\n'
        '    f.write(data[:len(data) // 2]); f.flush()\n'
        '    open(marker, "w").close()\n'
        '    time.sleep(120)\n')
    proc = subprocess.Popen(
        [sys.executable, '-c', script, str(target),
         str(reference_run / 'epoch_3.pth'), str(marker)],
        env=cli_env(data_root), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    # the checkpoint name still holds the complete old file; the half-written
    # data is in a hidden temporary file that no resume considers
    assert target.read_bytes() == old
    leftovers = stale_temp_files(str(target))
    assert len(leftovers) == 1 and is_temp_file(leftovers[0])
    assert os.path.getsize(leftovers[0]) == len(new) // 2
    candidates, _ = resume_candidates(str(tmp_path), ['epoch_{}.pth'])
    assert candidates == [str(target)]
    # the next write of the same file removes the leftover
    atomic_write_bytes(str(target), new)
    assert target.read_bytes() == new and not stale_temp_files(str(target))


def _resumed_runner(reference_run, data_root, tmp_path, epoch=2):
    work = copy_work_dir(reference_run, tmp_path / 'work')
    runner = build_runner(work, data_root, resume=True,
                          load_from=str(work / f'epoch_{epoch}.pth'))
    runner.load_or_resume()
    return runner, work


def _dying_write(real_write, fraction=0.5):
    def write(obj, f, *args, **kwargs):
        import io
        buf = io.BytesIO()
        real_write(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[:int(len(data) * fraction)])
        raise KeyboardInterrupt('killed during the save')
    return write


def test_saferunner_save_interrupted_keeps_the_old_checkpoint(
        reference_run, data_root, tmp_path, monkeypatch):
    runner, work = _resumed_runner(reference_run, data_root, tmp_path)
    old = (work / 'epoch_3.pth').read_bytes()
    runner.message_hub.update_info('last_ckpt', str(work / 'epoch_3.pth'))
    before = snapshot(work)

    # killed while the data is written ...
    with monkeypatch.context() as m:
        m.setattr(torch, 'save', _dying_write(torch.save))
        with pytest.raises(KeyboardInterrupt):
            runner.save_checkpoint(str(work), 'epoch_3.pth')
    # ... or between the write and the rename
    import skd_bnn_mm.utils.atomic_io as atomic_io

    def dying_replace(src, dst):
        raise KeyboardInterrupt('killed before the rename')

    with monkeypatch.context() as m:
        m.setattr(atomic_io.os, 'replace', dying_replace)
        with pytest.raises(KeyboardInterrupt):
            runner.save_checkpoint(str(work), 'epoch_3.pth')
    assert snapshot(work) == before
    assert not [p for p in os.listdir(work) if is_temp_file(p)]

    # a save that completes replaces the file and the pointer
    runner.save_checkpoint(str(work), 'epoch_3.pth')
    assert (work / 'epoch_3.pth').read_bytes() != old
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_3.pth')

    # control: mmengine's own writer, interrupted the same way, leaves a
    # truncated file under the checkpoint name
    from mmengine.runner import Runner
    from mmengine.fileio.backends import local_backend
    real_open = open

    class HalfFile:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[:len(data) // 2])
            raise KeyboardInterrupt('killed during the save')

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    with monkeypatch.context() as m:
        m.setattr(local_backend, 'open',
                  lambda path, mode='r', *a, **k: HalfFile(
                      real_open(path, mode, *a, **k)), raising=False)
        with pytest.raises(KeyboardInterrupt):
            Runner.save_checkpoint(runner, str(work), 'epoch_3.pth')
    from skd_bnn_mm.utils import load_checkpoint_file
    with pytest.raises(CorruptCheckpointError, match='truncated or corrupt'):
        load_checkpoint_file(str(work / 'epoch_3.pth'))


def _auto_resume(work, data_root, monkeypatch):
    runner = build_runner(work, data_root, resume=True, load_from=None)
    warnings = []
    monkeypatch.setattr(runner.logger, 'warning', warnings.append)
    runner.load_or_resume()
    return runner, warnings


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])


def test_auto_resume_skips_a_corrupt_latest_checkpoint(
        reference_run, data_root, tmp_path, monkeypatch):
    work = copy_work_dir(reference_run, tmp_path / 'work')
    _truncate(work / 'epoch_3.pth')  # e.g. written by a non-atomic tool
    runner, warnings = _auto_resume(work, data_root, monkeypatch)
    assert runner.epoch == 2
    text = '\n'.join(warnings)
    assert 'skipping unreadable checkpoint' in text and 'epoch_3.pth' in text
    assert 'resumed from' in text and 'epoch_2.pth' in text
    assert (work / 'epoch_3.pth').exists()  # left for inspection


def test_auto_resume_without_a_usable_pointer(reference_run, data_root,
                                              tmp_path, monkeypatch):
    work = copy_work_dir(reference_run, tmp_path / 'work')
    # interrupted pointer write, and the leftover of an interrupted save
    # with a higher number
    (work / 'last_checkpoint').write_text('')
    (work / '.epoch_9.pth.tmp-123-abcd1234').write_bytes(b'half a file')
    runner, warnings = _auto_resume(work, data_root, monkeypatch)
    assert runner.epoch == 3
    assert any('last_checkpoint' in w and 'empty' in w for w in warnings)

    # no pointer at all (killed right after the first save): scan
    (work / 'last_checkpoint').unlink()
    runner, _ = _auto_resume(work, data_root, monkeypatch)
    assert runner.epoch == 3


def test_auto_resume_with_no_readable_checkpoint_stops(
        reference_run, data_root, tmp_path, monkeypatch):
    work = copy_work_dir(reference_run, tmp_path / 'work')
    for path in work.glob('*.pth'):
        _truncate(path)
    before = snapshot(work)
    runner = build_runner(work, data_root, resume=True, load_from=None)
    with pytest.raises(CorruptCheckpointError,
                       match='none of the checkpoints.*nothing was changed'):
        runner.train()
    assert snapshot(work) == before
