"""Hostile checkpoints through every load path.

A checkpoint whose pickle calls ``os.system('touch MARKER')`` must fail
with a clear error and run nothing, whether it is resumed (explicitly or as
the latest file of the work dir), loaded with ``load_from``, evaluated with
tools/test.py or exported. Two attacks that pass ``weights_only=True`` are
covered as well: ``meta['config']`` (mmengine's resume runs it as Python)
and a message-hub path (mmengine's CheckpointHook deletes the previous
"best" checkpoint by that path), and a payload that rewrites a module's
namespace through ``getattr`` while loading.

The CLI runs are started together and then checked one by one.
"""
import io
import os
import subprocess
import sys
import zipfile

import pytest
import torch
from reliability_utils import (EXPORT_1BIT, EXPORT_ONNX, TEST, TINY, TRAIN,
                               cli_env, copy_work_dir, load, snapshot)


class Payload:
    """Unpickles into a call of os.system."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command, ))


def _hostile(source, path, marker):
    checkpoint = load(source)
    checkpoint['meta']['note'] = Payload(f'touch {marker}')
    torch.save(checkpoint, path)


CASES = ('resume_path', 'resume_auto', 'load_from', 'test_tool',
         'export_1bit', 'export_onnx')


@pytest.fixture(scope='module')
def runs(reference_run, data_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('hostile')
    jobs = {}
    for case in CASES:
        folder = tmp / case
        work = copy_work_dir(reference_run, folder / 'work')
        marker = folder / 'MARKER'
        evil = work / 'epoch_2.pth'  # replaces a real one: the latest is 3
        _hostile(reference_run / 'epoch_2.pth', evil, marker)
        if case == 'resume_auto':  # the hostile file is the latest one
            (work / 'epoch_3.pth').unlink()
            (work / 'last_checkpoint').write_text(str(evil))
        args = {
            'resume_path': [TRAIN, TINY, '--work-dir', work, '--resume',
                            evil],
            'resume_auto': [TRAIN, TINY, '--work-dir', work, '--resume'],
            'load_from': [TRAIN, TINY, '--work-dir', work, '--cfg-options',
                          f'load_from={evil}'],
            'test_tool': [TEST, TINY, evil, '--work-dir', folder / 'test'],
            'export_1bit': [EXPORT_1BIT, TINY, evil, folder / 'model.bnn'],
            'export_onnx': [EXPORT_ONNX, TINY, evil, folder / 'model.onnx'],
        }[case]
        if not os.path.isfile(str(args[0])):
            jobs[case] = None
            continue
        before = snapshot(work)
        jobs[case] = _start(args, data_root, marker, work, before, folder)
    # plain data (weights_only admits it): meta['config'] code, and a
    # 'previous best' path outside the run
    folder = tmp / 'plain_data'
    work = copy_work_dir(reference_run, folder / 'work')
    victim = folder / 'victim.txt'
    victim.write_text('precious')
    checkpoint = load(work / 'epoch_2.pth')
    checkpoint['meta']['config'] = \
        f"x = __import__('os').system('touch {folder / 'MARKER'}')\n"
    hub = checkpoint['message_hub']['runtime_info']
    hub['best_ckpt'], hub['best_score'] = str(victim), -1.0
    torch.save(checkpoint, work / 'epoch_2.pth')
    jobs['plain_data'] = _start(
        [TRAIN, TINY, '--work-dir', work, '--resume', work / 'epoch_2.pth'],
        data_root, folder / 'MARKER', work, None, folder)
    return _collect(jobs)


def _start(args, data_root, marker, work, before, folder):
    proc = subprocess.Popen([sys.executable, *map(str, args)],
                            env=cli_env(data_root), cwd=str(folder),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return proc, marker, work, before, folder


def _collect(jobs):
    results = {}
    for case, job in jobs.items():
        if job is None:
            results[case] = None
            continue
        proc, marker, work, before, folder = job
        out, err = proc.communicate(timeout=300)
        results[case] = dict(rc=proc.returncode, out=out, err=err,
                             marker=marker, work=work, before=before,
                             folder=folder)
    return results


@pytest.mark.parametrize('case', CASES)
def test_hostile_pickle_is_refused(runs, case):
    result = runs[case]
    if result is None:
        pytest.skip(f'{case}: tool not present in this checkout')
    text = result['out'] + result['err']
    assert result['rc'] != 0, text[-3000:]
    assert 'allow-list' in text and 'Nothing from it was executed' in text, \
        text[-3000:]
    assert not result['marker'].exists()
    # nothing written over the work dir's checkpoints, nothing trained
    assert snapshot(result['work']) == result['before']
    assert 'Epoch(train)' not in text
    for name in ('model.bnn', 'model.onnx'):
        assert not (result['folder'] / name).exists()


def test_resume_runs_no_code_from_meta_and_deletes_nothing(runs):
    """Plain data, so ``weights_only`` admits it; mmengine would run the
    config string and delete the 'previous best' file."""
    result = runs['plain_data']
    text = result['out'] + result['err']
    assert result['rc'] == 0, text[-3000:]
    assert not result['marker'].exists()
    assert (result['folder'] / 'victim.txt').read_text() == 'precious'
    assert 'Ignored meta["config"]' in text and 'Ignored best_ckpt' in text
    assert 'Epoch(train) [3]' in text  # the resume itself went on


def _zip_with_pickle(path, pickle_bytes):
    """A torch zip checkpoint whose data.pkl is ``pickle_bytes``."""
    buf = io.BytesIO()
    torch.save({'a': 1}, buf)
    buf.seek(0)
    with zipfile.ZipFile(buf) as src, \
            zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith('data.pkl'):
                data = pickle_bytes
            out.writestr(info.filename, data)


def test_getattr_cannot_reach_module_namespaces(tmp_path):
    """``getattr(getattr(HistoryBuffer, '__init__'), '__globals__')`` is the
    history_buffer module's namespace; a SETITEM on it would rewrite the
    module while the file loads."""
    import mmengine.logging.history_buffer as history_buffer

    from skd_bnn_mm.utils import UnsafeCheckpointError, load_checkpoint_file

    def glob(module, name):
        return b'c' + module.encode() + b'\n' + name.encode() + b'\n'

    def text(s):
        return b'X' + len(s).to_bytes(4, 'little') + s.encode()

    ops = (b'\x80\x02}' + text('x') + glob('__builtin__', 'getattr') +
           glob('__builtin__', 'getattr') +
           glob('mmengine.logging.history_buffer', 'HistoryBuffer') +
           text('__init__') + b'\x86R' + text('__globals__') + b'\x86R' +
           text('TAMPERED') + b'\x88s' + b's.')
    path = tmp_path / 'tamper.pth'
    _zip_with_pickle(path, ops)
    with pytest.raises(UnsafeCheckpointError, match='allow-list'):
        load_checkpoint_file(str(path))
    assert 'TAMPERED' not in vars(history_buffer)
    # mmengine's own use of getattr still loads: HistoryBuffer's statistics
    # methods, pickled as getattr(HistoryBuffer, 'mean')
    HistoryBuffer = history_buffer.HistoryBuffer
    torch.save({'hub': HistoryBuffer([1.0, 3.0], [1, 1]),
                'stat': HistoryBuffer.mean}, tmp_path / 'ok.pth')
    assert b'getattr' in (tmp_path / 'ok.pth').read_bytes()
    loaded = load_checkpoint_file(str(tmp_path / 'ok.pth'))
    assert loaded['stat'] is HistoryBuffer.mean
    assert loaded['hub'].mean() == 2.0
