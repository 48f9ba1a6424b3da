"""The SKD-BNN authors' files for the converter tests, and helpers.

``skd-bnn-official/`` (their ResNet-20 checkpoint and the ``state_dict``
layouts of their four networks) sits next to the CIFAR-10 bundle:
``$SKD_BNN_OFFICIAL_DIR``, else ``skd-bnn-official`` beside
``$CIFAR10_BUNDLE_DIR``, else ``../shared/data/skd-bnn-official`` next to
the checkout or next to the repository it was cloned from. Missing files
skip the tests, or fail them under ``SKD_BNN_REQUIRE_DATA=1`` (as CI runs).
"""
import os
import os.path as osp
import subprocess
from collections import OrderedDict

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
NAME = 'skd-bnn-official'
CHECKPOINT = 'resnet20_cifar10_best-checkpoint.th'
SHA256 = '173c09c6731d3a82e7bb5608b8f8a3ae8bde09fc1c57e7d4146c6cd694fa1a4f'

#: our config of each of the authors' networks
CONFIGS = {
    'resnet20_cifar10': 'configs/skd_bnn/skd-bnn_resnet20_1xb128_cifar10.py',
    'vgg-small_cifar10':
    'configs/skd_bnn/skd-bnn_vgg-small_1xb128_cifar10.py',
    'resnet18_cifar10': 'configs/skd_bnn/skd-bnn_resnet18_1xb128_cifar10.py',
    'resnet18_imagenet': 'configs/skd_bnn/skd-bnn_resnet18_8xb32_in1k.py',
}


def _candidates():
    yield os.environ.get('SKD_BNN_OFFICIAL_DIR')
    bundle = os.environ.get('CIFAR10_BUNDLE_DIR')
    if bundle:
        yield osp.join(bundle, '..', NAME)
    yield osp.join(ROOT, '..', 'shared', 'data', NAME)
    try:
        url = subprocess.run(['git', '-C', ROOT, 'remote', 'get-url',
                              'origin'], capture_output=True, text=True,
                             check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return
    url = url[len('file://'):] if url.startswith('file://') else url
    yield osp.join(url, '..', 'shared', 'data', NAME)


def official_file(name: str) -> str:
    """Path of one of the authors' files; skip (or fail) when absent."""
    for folder in _candidates():
        if folder and osp.isfile(osp.join(folder, name)):
            return osp.abspath(osp.join(folder, name))
    msg = (f'{NAME}/{name} not found (set SKD_BNN_OFFICIAL_DIR to the folder '
           'holding the authors\' checkpoint and keys_*.tsv)')
    if os.environ.get('SKD_BNN_REQUIRE_DATA') == '1':
        pytest.fail(msg)
    pytest.skip(msg)


def read_layout(model_name: str):
    """``[(key, shape, dtype)]`` of the authors' ``state_dict``, in order."""
    rows = []
    with open(official_file(f'keys_{model_name}.tsv')) as f:
        for line in f:
            key, shape, dtype = line.rstrip('\n').split('\t')
            dims = [int(d) for d in shape.strip('[]').split(',') if d.strip()]
            rows.append((key, tuple(dims), getattr(torch, dtype)))
    return rows


def random_state_dict(model_name: str, seed: int = 0) -> OrderedDict:
    """Distinct random values in the authors' layout (``module.`` keys)."""
    g = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for key, shape, dtype in read_layout(model_name):
        if dtype.is_floating_point:
            out[key] = torch.randn(shape, generator=g, dtype=dtype)
        else:
            out[key] = torch.randint(1, 10**9, shape, generator=g,
                                     dtype=dtype)
    return out


def expected_target(model_name: str, key: str) -> str:
    """Our name of the authors' ``key``, spelled out per network (written
    independently of the converter's rule tables)."""
    key = key[len('module.'):]
    module, param = key.rsplit('.', 1)
    if model_name == 'vgg-small_cifar10':
        if module in ('conv0', 'bn0'):
            ours = {'conv0': 'stem_conv', 'bn0': 'stem_bn'}[module]
            return f'backbone.{ours}.{param}'
        if module == 'fc':
            return f'head.fc.{param}'
        kind, index = module[:-1], module[-1]  # conv3 -> unit3.conv
        return f'backbone.unit{index}.{kind}.{param}'
    top = {'conv1': 'backbone.stem_conv', 'bn1': 'backbone.stem_bn',
           'bn2': 'neck.bn', 'linear': 'head.fc', 'fc': 'head.fc'}
    if module in top:
        return f'{top[module]}.{param}'
    assert module.startswith('layer'), key
    return 'backbone.' + key.replace('.shortcut.', '.downsample.')


def build_config_model(model_name: str):
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, CONFIGS[model_name]))
    return MODELS.build(cfg.model)
