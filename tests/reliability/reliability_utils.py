"""Helpers of the reliability tests: CLI runs, in-process runner builds,
work-dir snapshots.

Every subprocess runs with one intra-op thread: on a small shared machine
several OpenMP threads per process slow tiny models down by an order of
magnitude, and bit-exact comparisons need the same thread count anyway.
"""
import hashlib
import os
import os.path as osp
import subprocess
import sys
import uuid
from pathlib import Path


HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))
TINY = osp.join(ROOT, 'tests', 'data', 'tiny_skd_cifar10.py')
TRAIN = osp.join(ROOT, 'tools', 'train.py')
TEST = osp.join(ROOT, 'tools', 'test.py')
EXPORT_1BIT = osp.join(ROOT, 'tools', 'analysis_tools', 'export_1bit.py')
EXPORT_ONNX = osp.join(ROOT, 'tools', 'analysis_tools', 'export_onnx.py')
EPOCHS = 3  # of the tiny config
ITERS_PER_EPOCH = 7  # 200 images, batch 32


def cli_env(data_root, **extra):
    env = dict(os.environ, CIFAR10_ROOT=str(data_root),
               CIFAR10_VERIFY_MD5='False', OMP_NUM_THREADS='1',
               MKL_NUM_THREADS='1', PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join([ROOT, HERE]))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(args, data_root, check=True, timeout=300, **env):
    proc = subprocess.run([sys.executable, *map(str, args)],
                          env=cli_env(data_root, **env), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} failed:\n{proc.stdout[-3000:]}\n'
                             f'{proc.stderr[-3000:]}')
    return proc


def write_config(folder, text, name='cfg.py'):
    """A config file that inherits the tiny config (absolute path)."""
    path = Path(folder) / name
    path.write_text(f'_base_ = [{TINY!r}]\n' + text)
    return str(path)


def build_runner(work_dir, data_root, config=TINY, **overrides):
    """An in-process SafeRunner of ``config``; ``overrides`` are dotted keys
    (``'model.head.num_classes': 5``) merged into the config."""
    from mmpretrain.registry import RUNNERS
    return RUNNERS.build(build_cfg(work_dir, data_root, config, **overrides))


def build_cfg(work_dir, data_root, config=TINY, **overrides):
    """The config :func:`build_runner` builds."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = str(data_root)
        cfg[name].dataset.verify_md5 = False
    cfg.work_dir = str(work_dir)
    # a fresh name: mmengine shares loggers/message hubs by name
    cfg.experiment_name = f'reliability_{uuid.uuid4().hex[:12]}'
    cfg.log_level = 'WARNING'
    if overrides:
        cfg.merge_from_dict(overrides)
    return cfg


def snapshot(folder):
    """``{name: (size, mtime_ns, sha256)}`` of the checkpoints and the
    ``last_checkpoint`` pointer of a work dir."""
    out = {}
    for path in Path(folder).iterdir():
        if path.suffix == '.pth' or path.name == 'last_checkpoint':
            st = path.stat()
            out[path.name] = (st.st_size, st.st_mtime_ns,
                              hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def load(path):
    """Our own test files: the project's safe loader."""
    from skd_bnn_mm.utils import load_checkpoint_file
    return load_checkpoint_file(str(path), map_location='cpu')


def copy_work_dir(src, dst):
    """Copy a work dir; its ``last_checkpoint`` points into the copy."""
    import shutil
    shutil.copytree(src, dst)
    pointer = Path(dst) / 'last_checkpoint'
    if pointer.is_file():
        name = Path(pointer.read_text().strip()).name
        pointer.write_text(str(Path(dst) / name))
    return Path(dst)
