"""Init of the paper configs: the authors' VGG-Small and ResNet-20 recipes,
and the earlier Kaiming fan-in init by name."""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmpretrain.registry import MODELS

from skd_bnn_mm.models.backbones.weight_init import (INIT_PRESETS,
                                                     PresetInit,
                                                     TorchDefaultBiasInit)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def build(config, **head_init):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'skd_bnn', config))
    if head_init:
        cfg.merge_from_dict(head_init)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def check_normal(w, std, rel):
    assert w.std().item() == pytest.approx(std, rel=rel)
    assert abs(w.mean().item()) < 4 * std / math.sqrt(w.numel())


def test_vgg_small_convs_fan_out_and_linear_0_01():
    model = build('skd-bnn_vgg-small_1xb128_cifar10.py')
    b = model.backbone
    # N(0, sqrt(2 / (3*3*out_channels))): 0.0417 for the stem (fan-out)
    check_normal(b.stem_conv.weight, math.sqrt(2 / (9 * 128)), rel=0.05)
    for i, out in enumerate((128, 256, 256, 512, 512), 1):
        check_normal(getattr(b, f'unit{i}').conv.weight,
                     math.sqrt(2 / (9 * out)), rel=0.02)
    fc = model.head.fc
    check_normal(fc.weight, 0.01, rel=0.02)
    assert torch.count_nonzero(fc.bias) == 0
    for bn in (b.stem_bn, b.unit3.bn):
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_vgg_small_kaiming_fan_in_by_name():
    model = build('skd-bnn_vgg-small_1xb128_cifar10.py', **{
        'model.backbone.init_cfg.preset': 'kaiming-fan-in',
        'model.head.init_cfg.preset': 'kaiming-fan-in'})
    check_normal(model.backbone.stem_conv.weight, math.sqrt(2 / 27),
                 rel=0.05)  # 0.27
    check_normal(model.backbone.unit2.conv.weight,
                 math.sqrt(2 / (9 * 128)), rel=0.02)
    check_normal(model.head.fc.weight, math.sqrt(2 / 8192), rel=0.02)
    assert torch.count_nonzero(model.head.fc.bias) == 0


def test_resnet20_linear_bias_keeps_pytorch_default():
    model = build('skd-bnn_resnet20_1xb128_cifar10.py')
    check_normal(model.backbone.layer3[2].conv2.weight,
                 math.sqrt(2 / (9 * 64)), rel=0.02)
    check_normal(model.backbone.stem_conv.weight, math.sqrt(2 / 27),
                 rel=0.15)
    fc = model.head.fc
    check_normal(fc.weight, math.sqrt(2 / 64), rel=0.15)
    bound = 1 / math.sqrt(64)
    assert torch.count_nonzero(fc.bias) == 10
    assert fc.bias.abs().max().item() <= bound
    # the earlier init (zero bias) by name
    old = build('skd-bnn_resnet20_1xb128_cifar10.py', **{
        'model.head.init_cfg.preset': 'kaiming-fan-in'})
    assert torch.count_nonzero(old.head.fc.bias) == 0
    assert torch.equal(old.head.fc.weight, fc.weight)  # same draws


def test_torch_default_bias_is_uniform_and_leaves_weights():
    torch.manual_seed(1)
    lin, conv = nn.Linear(64, 20000), nn.Conv2d(8, 20000, 3)
    nn.init.zeros_(lin.bias)
    w = lin.weight.clone()
    TorchDefaultBiasInit(layer=['Linear'])(nn.Sequential(lin, conv))
    assert torch.equal(lin.weight, w)
    bound = 1 / 8
    assert lin.bias.abs().max().item() <= bound
    assert lin.bias.std().item() == pytest.approx(bound / math.sqrt(3),
                                                  rel=0.03)
    assert lin.bias.mean().item() == pytest.approx(0, abs=0.005)
    conv_bias = conv.bias.clone()
    TorchDefaultBiasInit(layer='Conv2d')(conv)
    assert not torch.equal(conv.bias, conv_bias)
    assert conv.bias.abs().max().item() <= 1 / math.sqrt(72)


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError) as e:
        PresetInit('authors-vgg')
    for name in INIT_PRESETS:
        assert name in str(e.value)
