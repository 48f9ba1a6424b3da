"""Shared fixtures: real CIFAR-10 subsets and a registry scope.

Tests that need real images unpack small per-class subsets of the bundled
CIFAR-10 copy with its own ``make_cifar10.py``. The bundle is looked up in
``$CIFAR10_BUNDLE_DIR``, then in ``../shared/data/cifar10`` next to the
checkout, then next to the local repository it was cloned from. When it is absent such tests are skipped with a visible reason,
unless ``SKD_BNN_REQUIRE_DATA=1`` (set by ``.ci/run``) turns that into a
failure, so CI can never skip them silently.
"""
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _origin_dir():
    """Local folder this checkout was cloned from, if any (a fresh clone in
    a temporary folder finds the bundle next to its origin)."""
    try:
        url = subprocess.run(['git', '-C', ROOT, 'remote', 'get-url',
                              'origin'], capture_output=True, text=True,
                             check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    url = url[len('file://'):] if url.startswith('file://') else url
    return url if osp.isdir(url) else None


def find_bundle_dir():
    origin = _origin_dir()
    for cand in (os.environ.get('CIFAR10_BUNDLE_DIR'),
                 osp.join(ROOT, '..', 'shared', 'data', 'cifar10'),
                 osp.join(ROOT, 'shared', 'data', 'cifar10'),
                 origin and osp.join(origin, '..', 'shared', 'data',
                                     'cifar10')):
        if cand and osp.isfile(osp.join(cand, 'make_cifar10.py')):
            return osp.abspath(cand)
    return None


def _need_bundle():
    bundle = find_bundle_dir()
    if bundle is None:
        msg = ('CIFAR-10 bundle not found (set CIFAR10_BUNDLE_DIR to the '
               'folder holding make_cifar10.py and cifar10_jpeg.npz)')
        if os.environ.get('SKD_BNN_REQUIRE_DATA') == '1':
            pytest.fail(msg)
        pytest.skip(msg)
    return bundle


@pytest.fixture(scope='session')
def cifar10_subset(tmp_path_factory):
    """Factory: ``cifar10_subset(train_per_class, test_per_class, layout)``.

    Returns the folder to use as ``data_root`` (pickle layout: it holds
    ``cifar-10-batches-py``; folders layout: ``train/`` and ``test/``).
    Subsets are unpacked once per session and shared between tests.
    """
    cache = {}

    def make(train_per_class=20, test_per_class=10, layout='pickle'):
        key = (train_per_class, test_per_class, layout)
        if key not in cache:
            bundle = _need_bundle()
            out = tmp_path_factory.mktemp(
                f'cifar10_{train_per_class}_{test_per_class}_{layout}')
            subprocess.run(
                [sys.executable, osp.join(bundle, 'make_cifar10.py'), str(out),
                 '--layout', layout, '--train-per-class', str(train_per_class),
                 '--test-per-class', str(test_per_class)],
                check=True, stdout=subprocess.DEVNULL)
            cache[key] = str(out)
        return cache[key]

    return make


@pytest.fixture
def free_port():
    """A TCP port free on 127.0.0.1 now (MASTER_PORT of a process group)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _mmpretrain_scope():
    """Build modules as configs do: inside the mmpretrain default scope."""
    from mmengine.registry import DefaultScope
    import skd_bnn_mm  # noqa: F401  (registers the plugin)
    name = 'skd_bnn_mm_test'
    if DefaultScope.check_instance_created(name):
        scope = DefaultScope.get_instance(name)
    else:
        scope = DefaultScope.get_instance(name, scope_name='mmpretrain')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield scope
