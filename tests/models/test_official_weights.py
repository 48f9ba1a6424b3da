"""convert_official_state_dict: the authors' four layouts, by value."""
import dataclasses

import pytest
import torch
from official_data import (CONFIGS, build_config_model, expected_target,
                           random_state_dict)

from skd_bnn_mm.engine.hooks.ede_hook import ede_schedule
from skd_bnn_mm.models.utils import official_weights
from skd_bnn_mm.models.utils.official_weights import (
    OFFICIAL_LAYOUTS, convert_official_state_dict)

RECIPE_EPOCHS = {'resnet20_cifar10': 700, 'vgg-small_cifar10': 600,
                 'resnet18_cifar10': 800, 'resnet18_imagenet': 128}
BINARY_CONVS = {'resnet20_cifar10': 18, 'vgg-small_cifar10': 5,
                'resnet18_cifar10': 16, 'resnet18_imagenet': 16}


def mislanded(model_name, src, state):
    """Source keys whose value is not where :func:`expected_target` says."""
    wrong = []
    for key, value in src.items():
        got = state.get(expected_target(model_name, key))
        if got is None or got.dtype != value.dtype or not torch.equal(
                got, value):
            wrong.append(key)
    return wrong


@pytest.fixture(scope='module')
def models():
    """One model per config, built once (ImageNet ResNet-18: 11.7M)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build_config_model(name)
        return cache[name]

    return get


@pytest.mark.parametrize('model_name', list(CONFIGS))
def test_random_layout_loads_strictly_and_lands_by_value(model_name, models):
    src = random_state_dict(model_name, seed=1)
    epoch = RECIPE_EPOCHS[model_name] // 3
    converted = convert_official_state_dict(src, model_name, epoch=epoch)
    model = models(model_name)
    model.load_state_dict(converted, strict=True)
    state = model.state_dict()
    assert mislanded(model_name, src, state) == []

    # everything else is EDE state (from the recipe) or the empty bank
    filled = {expected_target(model_name, k) for k in src}
    rest = [k for k in state if k not in filled]
    ede = [k for k in rest if k.endswith(('.ede_k', '.ede_t'))]
    bank = [k for k in rest if k.startswith('soft_label_bank.')]
    assert sorted(ede + bank) == sorted(rest)
    assert len(ede) == 2 * BINARY_CONVS[model_name]
    k, t = ede_schedule(epoch, RECIPE_EPOCHS[model_name], 1e-3, 10.0)
    for name in ede:
        want = k if name.endswith('ede_k') else t
        assert state[name].item() == pytest.approx(want, rel=1e-6), name
    assert not state['soft_label_bank.bank'].any()
    assert state['soft_label_bank.num_updates'].item() == 0
    assert state['soft_label_bank.last_epoch'].item() == -1
    # the converted tensors are copies, not views of the source
    some = next(iter(src))
    src[some].add_(1)
    assert not torch.equal(converted[expected_target(model_name, some)],
                           src[some])


def test_value_check_catches_a_same_shape_swap(monkeypatch):
    """With VGG-Small's bn2/bn3 rules swapped (both 256 channels) the
    conversion still fits by shape; only the by-value check sees it."""
    name = 'vgg-small_cifar10'
    layout = OFFICIAL_LAYOUTS[name]
    swapped = dataclasses.replace(layout, rules=(
        (r'bn2', 'backbone.unit3.bn'), (r'bn3', 'backbone.unit2.bn'),
    ) + layout.rules)
    monkeypatch.setitem(official_weights.OFFICIAL_LAYOUTS, name, swapped)
    src = random_state_dict(name, seed=2)
    converted = convert_official_state_dict(src, name)
    wrong = mislanded(name, src, converted)
    assert sorted(wrong) == sorted(
        f'module.bn{i}.{p}' for i in (2, 3) for p in (
            'weight', 'bias', 'running_mean', 'running_var',
            'num_batches_tracked'))


def test_default_epoch_is_the_recipes_last():
    src = random_state_dict('resnet20_cifar10')
    out = convert_official_state_dict(src, 'resnet20_cifar10')
    k, t = ede_schedule(699, 700)
    assert out['backbone.layer3.2.conv2.ede_t'].item() == pytest.approx(t)
    assert out['backbone.layer3.2.conv2.ede_k'].item() == k == 1.0


def test_without_bank_or_prefix_and_into_a_given_model():
    src = random_state_dict('resnet20_cifar10')
    bare = {k[len('module.'):]: v for k, v in src.items()}
    out = convert_official_state_dict(bare, 'resnet20_cifar10',
                                      soft_label_bank=False)
    assert not any(k.startswith('soft_label_bank.') for k in out)
    assert len(out) == 121 + 2 * 18
    # a full-precision twin (no IRConv2d) takes the same weights, no EDE
    from mmpretrain.registry import MODELS
    twin = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='BNNResNet20CIFAR', conv_cfg=None),
        neck=dict(type='PoolBNNeck', in_channels=64),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=64)))
    out = convert_official_state_dict(src, 'resnet20_cifar10', model=twin)
    twin.load_state_dict(out, strict=True)
    assert len(out) == 121


def _problem(src, model_name='resnet20_cifar10'):
    with pytest.raises(ValueError) as e:
        convert_official_state_dict(src, model_name)
    return str(e.value)


def test_extra_missing_and_mismatched_tensors_are_listed():
    src = random_state_dict('resnet20_cifar10')
    src['module.layer1.0.conv3.weight'] = torch.zeros(16, 16, 3, 3)
    msg = _problem(src)
    assert 'match no rule (1): layer1.0.conv3.weight [16, 16, 3, 3]' in msg

    src = random_state_dict('resnet20_cifar10')
    src['module.layer4.0.conv1.weight'] = torch.zeros(64, 64, 3, 3)
    assert 'without a target (1): layer4.0.conv1.weight' in _problem(src)

    src = random_state_dict('resnet20_cifar10')
    del src['module.layer2.1.bn1.running_var']
    msg = _problem(src)
    assert ('not filled by the source (1): '
            'backbone.layer2.1.bn1.running_var [32]') in msg

    src = random_state_dict('resnet20_cifar10')
    src['module.linear.weight'] = torch.zeros(100, 64)
    assert ('linear.weight [100, 64] torch.float32 -> head.fc.weight '
            'expects [10, 64] torch.float32') in _problem(src)

    src = random_state_dict('resnet20_cifar10')
    src['module.bn2.num_batches_tracked'] = torch.tensor(3.0)
    assert 'bn2.num_batches_tracked [] torch.float32 -> neck.bn.' \
        'num_batches_tracked expects [] torch.int64' in _problem(src)

    src = random_state_dict('resnet20_cifar10')
    src['module.linear.bias'] = [0.0] * 10
    assert "'linear.bias' is a list, not a tensor" in _problem(src)


def test_other_network_is_named():
    msg = _problem(random_state_dict('vgg-small_cifar10'))
    assert "does not fit the authors' resnet20_cifar10" in msg
    assert 'It is a vgg-small_cifar10 checkpoint' in msg
    msg = _problem(random_state_dict('resnet20_cifar10'),
                   'resnet18_imagenet')
    assert 'It is a resnet20_cifar10 checkpoint' in msg


def test_bad_arguments():
    src = random_state_dict('resnet20_cifar10')
    with pytest.raises(ValueError, match='Unknown model .resnet56'):
        convert_official_state_dict(src, 'resnet56')
    with pytest.raises(ValueError, match='pass its "state_dict" entry'):
        convert_official_state_dict({'epoch': 3, 'state_dict': src},
                                    'resnet20_cifar10')
