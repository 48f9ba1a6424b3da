"""Binary backbones: sizes, which convs are binary, unit names and wiring."""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmpretrain.registry import MODELS

from skd_bnn_mm.models.backbones import (BNNResNet18, BNNResNet18CIFAR,
                                         BNNResNet20CIFAR, BNNVGGSmall)
from skd_bnn_mm.models.backbones.bnn_blocks import OptionAShortcut
from skd_bnn_mm.models.layers import IRConv2d

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MODEL_CFGS = osp.join(ROOT, 'configs', '_base_', 'models')


def build_model(name, **backbone):
    cfg = Config.fromfile(osp.join(MODEL_CFGS, name)).model
    cfg.backbone.update(backbone)
    return MODELS.build(cfg)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def conv(cin, cout, k=3):
    return cin * cout * k * k


def bn(c):
    return 2 * c


def resnet20_expected():
    """Hand count: stem, 9 blocks of two 3x3 conv+BN, BN1d, Linear."""
    total = conv(3, 16) + bn(16)
    cin = 16
    for cout in (16, 32, 64):
        for _ in range(3):
            total += conv(cin, cout) + bn(cout) + conv(cout, cout) + bn(cout)
            cin = cout
    return total + bn(64) + 64 * 10 + 10


def resnet18_expected(stem_k, num_classes):
    """Hand count: stem, 8 blocks, 3 projection shortcuts, BN1d, Linear."""
    total = conv(3, 64, stem_k) + bn(64)
    cin = 64
    for cout in (64, 128, 256, 512):
        for _ in range(2):
            total += conv(cin, cout) + bn(cout) + conv(cout, cout) + bn(cout)
            if cin != cout:
                total += conv(cin, cout, 1) + bn(cout)
            cin = cout
    return total + bn(512) + 512 * num_classes + num_classes


def vgg_small_expected():
    total = conv(3, 128) + bn(128)
    for cin, cout in ((128, 128), (128, 256), (256, 256), (256, 512),
                      (512, 512)):
        total += conv(cin, cout) + bn(cout)
    return total + 8192 * 10 + 10


def resnet_unit_names(blocks_per_stage):
    return [f'layer{i + 1}.{j}.act{u}'
            for i, n in enumerate(blocks_per_stage)
            for j in range(n) for u in (1, 2)]


def resnet_binary_convs(blocks_per_stage):
    return {f'layer{i + 1}.{j}.conv{u}'
            for i, n in enumerate(blocks_per_stage)
            for j in range(n) for u in (1, 2)}


# config, input size, expected total params, method-doc size and tolerance,
# unit names, binary conv names, unit output shapes (C, H, W) by stage/unit
CASES = {
    'resnet20': dict(
        cfg='bnn-resnet20_cifar.py', size=32, total=resnet20_expected(),
        doc=(0.27e6, 0.03),
        units=resnet_unit_names((3, 3, 3)),
        binary=resnet_binary_convs((3, 3, 3)),
        fp_convs={'stem_conv'},
        unit_shape=lambda name: {'layer1': (16, 32, 32),
                                 'layer2': (32, 16, 16),
                                 'layer3': (64, 8, 8)}[name.split('.')[0]],
        out=(64, 8, 8)),
    'vgg_small': dict(
        cfg='bnn-vgg-small_cifar.py', size=32, total=vgg_small_expected(),
        doc=(4.6e6, 0.03),
        units=[f'unit{i}.act' for i in range(1, 6)],
        binary={f'unit{i}.conv' for i in range(1, 6)},
        fp_convs={'stem_conv'},
        unit_shape=lambda name: {'unit1': (128, 16, 16),
                                 'unit2': (256, 16, 16),
                                 'unit3': (256, 8, 8),
                                 'unit4': (512, 8, 8),
                                 'unit5': (512, 4, 4)}[name.split('.')[0]],
        out=(512, 4, 4)),
    'resnet18_cifar': dict(
        cfg='bnn-resnet18_cifar.py', size=32,
        total=resnet18_expected(3, 10), doc=(11.2e6, 0.03),
        units=resnet_unit_names((2, 2, 2, 2)),
        binary=resnet_binary_convs((2, 2, 2, 2)),
        fp_convs={'stem_conv', 'layer2.0.downsample.0',
                  'layer3.0.downsample.0', 'layer4.0.downsample.0'},
        unit_shape=lambda name: {'layer1': (64, 32, 32),
                                 'layer2': (128, 16, 16),
                                 'layer3': (256, 8, 8),
                                 'layer4': (512, 4, 4)}[name.split('.')[0]],
        out=(512, 4, 4)),
    # ImageNet net on a 64x64 input (1/32 of it after the stem and stages)
    'resnet18_in1k': dict(
        cfg='bnn-resnet18_in1k.py', size=64,
        total=resnet18_expected(7, 1000), doc=(11.7e6, 0.01),
        units=resnet_unit_names((2, 2, 2, 2)),
        binary=resnet_binary_convs((2, 2, 2, 2)),
        fp_convs={'stem_conv', 'layer2.0.downsample.0',
                  'layer3.0.downsample.0', 'layer4.0.downsample.0'},
        unit_shape=lambda name: {'layer1': (64, 16, 16),
                                 'layer2': (128, 8, 8),
                                 'layer3': (256, 4, 4),
                                 'layer4': (512, 2, 2)}[name.split('.')[0]],
        out=(512, 2, 2)),
}


@pytest.fixture(scope='module')
def models():
    """One binary model per case, built once from the base configs."""
    torch.manual_seed(0)
    return {key: build_model(case['cfg']) for key, case in CASES.items()}


@pytest.mark.parametrize('key', list(CASES))
def test_parameter_count(models, key):
    case = CASES[key]
    model = models[key]
    total = n_params(model)
    assert total == case['total']
    size, tol = case['doc']
    assert abs(total - size) / size < tol, (key, total)
    # the full-precision twin has exactly the same parameters
    assert n_params(build_model(case['cfg'], conv_cfg=None)) == total


def test_documented_sizes():
    """The method doc's sizes, directly: 0.27M, ~11M, 11.7M."""
    assert round(resnet20_expected() / 1e6, 2) == 0.27
    assert round(n_params(build_model('bnn-resnet20_cifar.py')) / 1e4) == 27
    assert 11.0e6 < resnet18_expected(3, 10) < 11.5e6
    assert round(resnet18_expected(7, 1000) / 1e5) == 117


@pytest.mark.parametrize('key', list(CASES))
def test_binary_convs_and_full_precision_parts(models, key):
    case = CASES[key]
    model = models[key]
    backbone = model.backbone
    binary = {n for n, m in backbone.named_modules()
              if isinstance(m, IRConv2d)}
    assert binary == case['binary']
    fp = {n for n, m in backbone.named_modules()
          if isinstance(m, nn.Conv2d) and not isinstance(m, IRConv2d)}
    assert fp == case['fp_convs']
    assert not any(isinstance(m, IRConv2d) for m in model.head.modules())
    assert type(model.head.fc) is nn.Linear
    # the twin: same module names, no binary conv at all
    twin = build_model(case['cfg'], conv_cfg=None)
    assert not any(isinstance(m, IRConv2d) for m in twin.modules())
    assert ({n for n, _ in twin.named_modules()}
            == {n for n, _ in model.named_modules()})
    assert all(type(twin.backbone.get_submodule(n)) is nn.Conv2d
               for n in case['binary'])


@pytest.mark.parametrize('key', list(CASES))
def test_unit_outputs_by_name(models, key):
    case = CASES[key]
    backbone = models[key].backbone
    assert backbone.unit_names() == case['units']
    assert len(case['units']) == {'resnet20': 18, 'vgg_small': 5,
                                  'resnet18_cifar': 16,
                                  'resnet18_in1k': 16}[key]
    modules = dict(backbone.named_modules())
    recorded = {}
    handles = [
        modules[name].register_forward_hook(
            lambda m, i, o, name=name: recorded.__setitem__(name, o))
        for name in case['units']]
    x = torch.randn(2, 3, case['size'], case['size'])
    try:
        outs = backbone(x)
    finally:
        for h in handles:
            h.remove()
    assert list(recorded) == case['units']  # all of them, in forward order
    for name, out in recorded.items():
        assert isinstance(modules[name], nn.Hardtanh)
        assert out.shape == (2, ) + case['unit_shape'](name), name
        assert out.abs().max() <= 1
    assert isinstance(outs, tuple) and len(outs) == 1
    assert outs[0].shape == (2, ) + case['out']
    # the last unit's output is the backbone's output, unchanged
    assert torch.equal(recorded[case['units'][-1]], outs[0])


@pytest.mark.parametrize('key', list(CASES))
def test_backward_reaches_every_parameter(models, key):
    case = CASES[key]
    model = models[key]
    model.zero_grad()
    x = torch.randn(2, 3, case['size'], case['size'])
    logits = model(x, mode='tensor')
    assert logits.shape == (2, model.head.num_classes)
    F.cross_entropy(logits, torch.tensor([0, 1])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    for name in case['binary']:
        w = model.backbone.get_submodule(name).weight
        assert w.grad.abs().sum() > 0, name


def test_option_a_shortcut_values():
    x = torch.randn(2, 16, 8, 8)
    out = OptionAShortcut(16, 32, 2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, :8]) == 0
    assert torch.count_nonzero(out[:, 24:]) == 0
    # odd number of new channels: the extra one goes after
    out = OptionAShortcut(3, 6, 1)(x[:, :3])
    assert torch.equal(out[:, 1:4], x[:, :3])
    assert torch.count_nonzero(out[:, [0, 4, 5]]) == 0
    with pytest.raises(ValueError, match='only add channels'):
        OptionAShortcut(32, 16, 2)


def record(module, names):
    """Inputs and outputs of the named submodules in one forward pass."""
    seen = {}
    hooks = [module.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: seen.__setitem__(n, (i[0], o))) for n in names]
    return seen, hooks


def test_resnet20_block_wiring():
    """unit1 = Hardtanh(bn1 + optionA(x)), unit2 = Hardtanh(bn2 + unit1)."""
    torch.manual_seed(0)
    backbone = BNNResNet20CIFAR()
    block = backbone.layer2[0]
    assert isinstance(block.downsample, OptionAShortcut)
    assert backbone.layer2[1].downsample is None
    seen, hooks = record(block, ['conv1', 'bn1', 'act1', 'bn2', 'act2'])
    backbone(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    x = seen['conv1'][0]
    short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))
    unit1 = (seen['bn1'][1] + short).clamp(-1, 1)
    torch.testing.assert_close(seen['act1'][1], unit1)
    unit2 = (seen['bn2'][1] + unit1).clamp(-1, 1)
    torch.testing.assert_close(seen['act2'][1], unit2)


@pytest.mark.parametrize('avg_down', [False, True])
def test_resnet18_in1k_block_wiring(avg_down):
    """Bi-Real: a shortcut around each conv, projection on unit 1 only."""
    torch.manual_seed(0)
    backbone = BNNResNet18(avg_down=avg_down)
    block = backbone.layer3[0]
    kinds = [type(m) for m in block.downsample]
    if avg_down:
        assert kinds == [nn.AvgPool2d, nn.Conv2d, nn.BatchNorm2d]
        assert block.downsample[1].stride == (1, 1)
    else:
        assert kinds == [nn.Conv2d, nn.BatchNorm2d]
        assert block.downsample[0].stride == (2, 2)
    seen, hooks = record(block, ['conv1', 'bn1', 'act1', 'bn2', 'act2',
                                 'downsample'])
    out = backbone(torch.randn(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert out[0].shape == (1, 512, 2, 2)
    x = seen['conv1'][0]
    assert torch.equal(seen['downsample'][0], x)
    unit1 = (seen['bn1'][1] + seen['downsample'][1]).clamp(-1, 1)
    torch.testing.assert_close(seen['act1'][1], unit1)
    unit2 = (seen['bn2'][1] + unit1).clamp(-1, 1)
    torch.testing.assert_close(seen['act2'][1], unit2)


def test_resnet18_cifar_block_wiring():
    """One shortcut per block, added after bn2 only."""
    torch.manual_seed(0)
    backbone = BNNResNet18CIFAR(conv_cfg=None)
    block = backbone.layer2[0]
    seen, hooks = record(block, ['conv1', 'bn1', 'act1', 'bn2', 'act2',
                                 'downsample'])
    backbone(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert torch.equal(seen['downsample'][0], seen['conv1'][0])
    torch.testing.assert_close(seen['act1'][1], seen['bn1'][1].clamp(-1, 1))
    torch.testing.assert_close(
        seen['act2'][1],
        (seen['bn2'][1] + seen['downsample'][1]).clamp(-1, 1))


def test_vgg_small_unit_order():
    """conv -> max-pool -> bn -> Hardtanh; pool only in units 1, 3, 5."""
    torch.manual_seed(0)
    backbone = BNNVGGSmall()
    pools = [i for i in range(1, 6)
             if hasattr(getattr(backbone, f'unit{i}'), 'pool')]
    assert pools == [1, 3, 5]
    seen, hooks = record(backbone, ['unit3.conv', 'unit3.pool', 'unit3.bn',
                                    'unit3.act'])
    backbone(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert torch.equal(seen['unit3.pool'][0], seen['unit3.conv'][1])
    assert torch.equal(seen['unit3.bn'][0], seen['unit3.pool'][1])
    torch.testing.assert_close(seen['unit3.act'][1],
                               seen['unit3.bn'][1].clamp(-1, 1))


def test_kaiming_init():
    """init_weights: Kaiming-normal (fan-in, gain sqrt 2) convs and head."""
    torch.manual_seed(0)
    model = build_model('bnn-resnet18_cifar.py')
    model.init_weights()
    w = model.backbone.layer4[1].conv2.weight  # 512*512*9 weights
    assert isinstance(model.backbone.layer4[1].conv2, IRConv2d)
    assert w.std().item() == pytest.approx(math.sqrt(2 / (512 * 9)),
                                           rel=0.01)
    assert abs(w.mean().item()) < 0.01 * math.sqrt(2 / (512 * 9))
    stem = model.backbone.stem_conv.weight
    assert stem.std().item() == pytest.approx(math.sqrt(2 / 27), rel=0.1)
    fc = model.head.fc
    assert fc.weight.std().item() == pytest.approx(math.sqrt(2 / 512),
                                                   rel=0.05)
    assert torch.count_nonzero(fc.bias) == 0


def test_out_indices():
    backbone = BNNResNet20CIFAR(conv_cfg=None, out_indices=(0, 1, -1))
    outs = backbone(torch.randn(1, 3, 32, 32))
    assert [o.shape[1:] for o in outs] == [(16, 32, 32), (32, 16, 16),
                                           (64, 8, 8)]
    vgg = BNNVGGSmall(conv_cfg=None, out_indices=(2, 4))
    assert [o.shape[1:] for o in vgg(torch.randn(1, 3, 32, 32))] == [
        (256, 8, 8), (512, 4, 4)]
    with pytest.raises(ValueError, match=r'valid indices 0\.\.2'):
        BNNResNet20CIFAR(conv_cfg=None, out_indices=(3, ))
    with pytest.raises(ValueError, match=r'5 units'):
        BNNVGGSmall(conv_cfg=None, out_indices=(-6, ))
