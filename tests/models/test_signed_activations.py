"""replace_activations: which activations lose the sign, the report, and the
Hardtanh / Clamp layers registered for act_cfg."""
from collections import OrderedDict

import pytest
import timm
import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmcv.cnn.bricks.activation import Clamp as MMCVClamp
from mmcv.cnn.bricks.hsigmoid import HSigmoid
from mmcv.cnn.bricks.hswish import HSwish
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
from timm.layers.activations import GELUTanh, HardMish, HardSigmoid, HardSwish

from skd_bnn_mm.models.layers import Clamp, Hardtanh
from skd_bnn_mm.models.utils import (binarize, find_nonnegative_inputs,
                                     replace_activations)
from skd_bnn_mm.models.utils.signed_activations import (GATE, REPLACED,
                                                        SIGNED,
                                                        classify_activation)


def _zoo():
    return nn.Sequential(OrderedDict([
        ('conv', nn.Conv2d(3, 4, 1)),
        ('bn', nn.BatchNorm2d(4)),
        ('relu', nn.ReLU(inplace=True)),
        ('relu6', nn.ReLU6()),
        ('hswish', nn.Hardswish()),
        ('timm_hswish', HardSwish()),
        ('timm_hmish', HardMish()),
        ('mmcv_hswish', HSwish()),
        ('mmcv_clamp01', MMCVClamp(min=0., max=1.)),
        ('clamp0', Clamp(min=0.)),
        ('hardtanh01', nn.Hardtanh(0., 1.)),
        ('softplus', nn.Softplus()),
        ('hardtanh', nn.Hardtanh()),
        ('mmcv_clamp', MMCVClamp()),
        ('silu', nn.SiLU()),
        ('gelu', nn.GELU()),
        ('gelu_tanh', GELUTanh()),
        ('mish', nn.Mish()),
        ('leaky', nn.LeakyReLU()),
        ('prelu', nn.PReLU(4)),
        ('elu', nn.ELU()),
        ('tanh', nn.Tanh()),
        ('sigmoid', nn.Sigmoid()),
        ('hsigmoid', nn.Hardsigmoid()),
        ('mmcv_hsigmoid', HSigmoid()),
        ('timm_hsigmoid', HardSigmoid()),
        ('identity', nn.Identity()),
        ('softmax', nn.Softmax(dim=1)),
    ]))


def test_report_lists_what_was_replaced_and_left():
    model = _zoo()
    report = replace_activations(model, exclude=['relu6'])
    assert report.replaced == {
        'relu': 'ReLU -> Hardtanh',
        'hswish': 'Hardswish -> Hardtanh',
        'timm_hswish': 'HardSwish -> Hardtanh',
        'timm_hmish': 'HardMish -> Hardtanh',
        'mmcv_hswish': 'HSwish -> Hardtanh',
        'mmcv_clamp01': 'Clamp -> Hardtanh',
        'clamp0': 'Clamp -> Hardtanh',
        'hardtanh01': 'Hardtanh -> Hardtanh',
        'softplus': 'Softplus -> Hardtanh',
    }
    signed = ['hardtanh', 'mmcv_clamp', 'silu', 'gelu', 'gelu_tanh', 'mish',
              'leaky', 'prelu', 'elu', 'tanh']
    gates = ['sigmoid', 'hsigmoid', 'mmcv_hsigmoid', 'timm_hsigmoid']
    kinds = {n: type(model.get_submodule(n)).__name__
             for n in ['relu6'] + signed + gates}
    assert report.left == {
        'relu6': 'ReLU6: matched by exclude',
        **{n: f'{kinds[n]}: {SIGNED}' for n in signed},
        **{n: f'{kinds[n]}: {GATE}' for n in gates},
    }
    S, G = SIGNED, GATE
    assert report.summary() == (
        'replaced 9 (Clamp -> Hardtanh x2, HSwish -> Hardtanh x1, HardMish '
        '-> Hardtanh x1, HardSwish -> Hardtanh x1, Hardswish -> Hardtanh x1, '
        'Hardtanh -> Hardtanh x1, ReLU -> Hardtanh x1, Softplus -> Hardtanh '
        f'x1); left 15 (Clamp: {S} x1, ELU: {S} x1, GELU: {S} x1, GELUTanh: '
        f'{S} x1, HSigmoid: {G} x1, HardSigmoid: {G} x1, Hardsigmoid: {G} '
        f'x1, Hardtanh: {S} x1, LeakyReLU: {S} x1, Mish: {S} x1, PReLU: {S} '
        f'x1, ReLU6: matched by exclude x1, SiLU: {S} x1, Sigmoid: {G} x1, '
        f'Tanh: {S} x1)')
    # mmcv's HSwish (x * ReLU6(x + 3) / 6) is one unit: its inner ReLU6 is
    # not touched on its own
    assert type(model.mmcv_hswish) is nn.Hardtanh
    # the new modules: Hardtanh(-1, 1), in place where the old one was
    assert type(model.relu) is nn.Hardtanh and model.relu.inplace
    assert (model.relu.min_val, model.relu.max_val) == (-1., 1.)
    assert not model.hswish.inplace
    assert type(model.relu6) is nn.ReLU6 and type(model.silu) is nn.SiLU
    assert type(model.conv) is nn.Conv2d and type(model.softmax) is nn.Softmax


def test_probe_decisions_match_the_functions():
    # Hardswish is 0 from -3 down, sign(0) = +1: a lost sign
    x = torch.tensor([-3.5, -3., -1., 0.5])
    assert torch.equal(nn.Hardswish()(x) >= 0,
                       torch.tensor([True, True, False, True]))
    assert classify_activation(nn.Hardswish()) == REPLACED
    # SiLU / GELU keep the sign of every BN-range value
    x = -torch.logspace(0.6, -3, 50)
    assert (nn.SiLU()(x) < 0).all() and (nn.GELU()(x) < 0).all()
    assert classify_activation(nn.SiLU()) == SIGNED
    assert classify_activation(nn.LogSigmoid()) == REPLACED  # < 0 for x > 0


def test_shared_module_replaced_once_everywhere():
    act = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(3, 3, 1), act, nn.Conv2d(3, 3, 1), act)
    report = replace_activations(model)
    assert report.replaced == {'1': 'ReLU -> Hardtanh'}  # one module
    assert model[1] is model[3] and type(model[1]) is nn.Hardtanh


def test_bad_act_cfg():
    with pytest.raises(KeyError, match='not registered'):
        replace_activations(nn.Sequential(nn.ReLU()),
                            act_cfg=dict(type='Hardtanhh'))
    with pytest.raises(KeyError, match="must contain 'type'"):
        replace_activations(nn.Sequential(nn.ReLU()), act_cfg=dict())


def test_relu6_replaced_in_timm_mobilenetv2_050():
    torch.manual_seed(0)
    model = timm.create_model('mobilenetv2_050', pretrained=False)
    relu6 = [n for n, m in model.named_modules() if type(m) is nn.ReLU6]
    assert len(relu6) == 35
    report = binarize(model, replace_activations=True)
    assert report.activations.replaced == {
        n: 'ReLU6 -> Hardtanh' for n in relu6}
    assert report.activations.left == {}
    assert not any(type(m) is nn.ReLU6 for m in model.modules())
    assert all(model.get_submodule(n).inplace for n in relu6)
    assert len(report.converted) == 51 and report.first_conv == 'conv_stem'
    assert find_nonnegative_inputs(model, torch.randn(2, 3, 32, 32)) == []
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()


def test_mobilenetv2_050_relu6_left_is_caught():
    torch.manual_seed(0)
    model = timm.create_model('mobilenetv2_050', pretrained=False)
    with pytest.warns(UserWarning, match='35 activation modules \\(ReLU6\\)'):
        binarize(model)
    found = find_nonnegative_inputs(model, torch.randn(2, 3, 32, 32))
    # each ReLU6 but the last (before the pooling) feeds one binary conv;
    # one more conv reads the BN output of a conv that got only +1 inputs
    by_relu6 = [f for f in found if f.producer_type == 'ReLU6']
    assert len(by_relu6) == 34
    assert [(f.conv, f.producer) for f in found
            if f.producer_type != 'ReLU6'] == [('blocks.1.0.conv_pw',
                                                'blocks.0.0.bn2')]


def test_hardtanh_and_clamp_for_act_cfg():
    x = torch.linspace(-3, 3, 13).view(1, 1, 1, 13)
    assert ROOT_MODELS.get('Hardtanh') is nn.Hardtanh is Hardtanh
    # ConvModule adds inplace=True to act_cfg: mmcv's Clamp cannot take it
    with DefaultScope.overwrite_default_scope('mmengine'):
        with pytest.raises(TypeError, match='inplace'):
            ConvModule(1, 1, 1, act_cfg=dict(type='Clamp'))
        assert type(ConvModule(1, 1, 1, act_cfg=dict(type='Hardtanh'))
                    .activate) is nn.Hardtanh
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        for cfg in (dict(type='Hardtanh'), dict(type='Clamp'),
                    dict(type='Clamp', min=-0.5, max=2.)):
            conv = ConvModule(1, 1, 1, act_cfg=cfg, norm_cfg=None)
            assert conv.activate.inplace
            lo, hi = cfg.get('min', -1.), cfg.get('max', 1.)
            assert torch.equal(conv.activate(x.clone()), x.clamp(lo, hi))
        assert type(MODELS.build(dict(type='Clamp'))) is Clamp
    # mmcv's Clamp stays what the root registry has
    assert ROOT_MODELS.module_dict['Clamp'] is MMCVClamp
