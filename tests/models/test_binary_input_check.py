"""The first-forward check for binary convs that only ever see inputs >= 0
(its hook: tests/engine/hooks/test_binary_input_check_hook.py)."""
import copy
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from skd_bnn_mm.models.layers import IRConv2d
from skd_bnn_mm.models.utils import (NonNegativeBinaryInputError,
                                     NonNegativeBinaryInputWarning,
                                     arm_binary_input_check,
                                     find_nonnegative_inputs)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# mmpretrain's own model file behind the README snippet
RESNET18_CIFAR = osp.join(
    osp.dirname(__import__('mmpretrain').__file__),
    '.mim/configs/_base_/models/resnet18_cifar.py')


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope('mmpretrain')


def _classifier(backbone):
    """mmpretrain's resnet18_cifar.py classifier with another backbone."""
    cfg = Config.fromfile(RESNET18_CIFAR).model
    cfg.backbone = backbone
    torch.manual_seed(0)
    return MODELS.build(cfg)


def _loss_forward(model, n=2):
    inputs = torch.randn(n, 3, 16, 16)
    samples = [DataSample().set_gt_label(i % 10) for i in range(n)]
    model.train()
    return model(inputs, samples, mode='loss')


def _hook_counts(model):
    return {n: (len(m._forward_pre_hooks), len(m._forward_hooks))
            for n, m in model.named_modules()}


RELU_BACKBONE = dict(type='ResNet_CIFAR', depth=18,
                     conv_cfg=dict(type='IRConv2d'))


def test_fires_on_resnet_cifar_conv_cfg_with_relu():
    model = _classifier(RELU_BACKBONE)
    binary = [n for n, m in model.named_modules() if isinstance(m, IRConv2d)]
    assert len(binary) == 20
    before = _hook_counts(model)
    arm_binary_input_check(model)
    with pytest.raises(NonNegativeBinaryInputError) as err:
        _loss_forward(model)
    msg = str(err.value)
    # every binary conv but the stem (which sees the normalised image)
    assert msg.startswith('19 of 20 binary convs saw only inputs >= 0')
    assert 'backbone.layer1.0.conv1 (after backbone.relu, ReLU)' in msg
    assert ('backbone.layer1.0.conv2 (after backbone.layer1.0.relu, ReLU)'
            in msg)
    assert "act_cfg=dict(type='Hardtanh')" in msg
    assert 'replace_activations=True' in msg
    assert 'backbone.conv1 ' not in msg
    assert _hook_counts(model) == before  # nothing left behind


def test_names_all_nineteen_convs_and_their_relus():
    model = MODELS.build(RELU_BACKBONE)
    found = find_nonnegative_inputs(model, torch.randn(2, 3, 16, 16))
    binary = [n for n, m in model.named_modules() if isinstance(m, IRConv2d)]
    assert [f.conv for f in found] == [n for n in binary if n != 'conv1']
    for f in found:
        block = f.conv.rsplit('.', 1)[0]
        if f.conv.endswith('conv2'):  # after conv1 + BN + the block's ReLU
            assert f.producer == f'{block}.relu'
        assert f.producer_type == 'ReLU'
    assert {f.producer for f in found if f.conv == 'layer2.0.downsample.0'} \
        == {'layer1.1.relu'}


def test_silent_with_hardtanh_and_costs_nothing_afterwards():
    model = _classifier(
        dict(type='BinarizedBackbone', backbone=RELU_BACKBONE,
             binarize_convs=False))
    backbone = model.backbone
    assert backbone.activation_report.replaced == {
        'relu': 'ReLU -> Hardtanh',
        **{f'layer{i}.{j}.relu': 'ReLU -> Hardtanh'
           for i in range(1, 5) for j in range(2)}
    }
    check = backbone._input_check
    assert not check.done and check.num_convs == 20
    loss = _loss_forward(model)
    assert check.done and check.findings == [] and check.num_seen == 20
    # every hook of the check is gone after the first forward
    assert all(v == (0, 0) for v in _hook_counts(model).values())
    assert torch.isfinite(loss['loss'])


def test_mmpretrain_backbones_with_act_cfg_hardtanh():
    x = torch.randn(2, 3, 32, 32)  # VGG pools five times
    for cfg in (dict(type='MobileNetV2', widen_factor=0.5),
                dict(type='VGG', depth=11, num_classes=-1)):
        cfg = dict(cfg, conv_cfg=dict(type='IRConv2d'))
        relu = MODELS.build(cfg)
        assert len(find_nonnegative_inputs(relu, x)) > 0, cfg['type']
        signed = MODELS.build(dict(cfg, act_cfg=dict(type='Hardtanh')))
        assert find_nonnegative_inputs(signed, x) == [], cfg['type']


class _FunctionalRelu(nn.Module):

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv = IRConv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(F.relu(self.bn(self.stem(x))))


def test_functional_relu_is_caught_and_warn_mode():
    net = _FunctionalRelu()
    arm_binary_input_check(net, action='warn')
    with pytest.warns(NonNegativeBinaryInputWarning) as rec:
        net(torch.randn(2, 3, 8, 8))
    msg = str(rec[0].message)
    assert msg.startswith('1 of 1 binary convs')
    assert 'conv (input computed inside a forward, e.g. a functional ' \
           'F.relu, after bn)' in msg
    net(torch.randn(2, 3, 8, 8))  # once only: no second warning, no hooks
    assert not net.conv._forward_pre_hooks and not net._forward_hooks


def test_negative_inputs_pass_and_bad_action():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8),
                        nn.Hardtanh(), IRConv2d(8, 8, 3))
    assert find_nonnegative_inputs(net, torch.randn(2, 3, 8, 8)) == []
    with pytest.raises(ValueError, match="one of \\('error', 'warn'\\)"):
        arm_binary_input_check(net, action='raise')
    assert arm_binary_input_check(net, action=None) is None
    # no binary conv: nothing to watch
    assert arm_binary_input_check(nn.Sequential(nn.ReLU())).done


def test_copies_made_before_the_first_forward():
    net = _FunctionalRelu()
    check = arm_binary_input_check(net)
    twin = copy.deepcopy(net)  # carries the hook functions along
    twin(torch.randn(2, 3, 8, 8))  # ignored: another module
    assert not check.done
    with pytest.raises(NonNegativeBinaryInputError):
        net(torch.randn(2, 3, 8, 8))
    twin(torch.randn(2, 3, 8, 8))  # the copy's inert hooks drop out
    assert not twin.conv._forward_pre_hooks and not twin._forward_hooks


def test_one_check_per_conv():
    net = _FunctionalRelu()
    first = arm_binary_input_check(net, action='warn')
    second = arm_binary_input_check(net)  # e.g. the hook after the wrapper
    assert second.done and second.num_convs == 0
    with pytest.warns(NonNegativeBinaryInputWarning):
        net(torch.randn(2, 3, 8, 8))
    assert first.done and len(first.findings) == 1


def test_skd_convcfg_config_trains_past_the_check():
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs', 'skd_bnn',
        'skd-bnn_mmpretrain-resnet18-convcfg_1xb128_cifar10.py'))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    check = model.backbone._input_check
    samples = [DataSample().set_gt_label(i % 10) for i in range(2)]
    losses = model(torch.randn(2, 3, 16, 16), samples, mode='loss')
    assert check.done and check.findings == [] and check.num_seen == 20
    assert all(torch.isfinite(v).all() for v in losses.values())


@pytest.mark.parametrize('name,size', [('bnn-resnet20_cifar', 32),
                                       ('bnn-vgg-small_cifar', 32),
                                       ('bnn-resnet18_cifar', 32),
                                       ('bnn-resnet18_in1k', 64)])
def test_paper_backbones_pass(name, size):
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', '_base_', 'models', f'{name}.py'))
    torch.manual_seed(0)
    backbone = MODELS.build(cfg.model.backbone)
    backbone.train()
    assert find_nonnegative_inputs(
        backbone, torch.randn(2, 3, size, size)) == []
