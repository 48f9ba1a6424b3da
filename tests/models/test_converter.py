import os.path as osp

import pytest
import timm
import torch
import torch.nn as nn
from mmengine.config import Config
from mmpretrain.registry import MODELS

from skd_bnn_mm.models.backbones import BinarizedBackbone
from skd_bnn_mm.models.layers import IRConv2d
from skd_bnn_mm.models.utils import (binarize, binary_conv_names,
                                     relu_to_hardtanh, unbinarize)
from skd_bnn_mm.models.utils.binary_input_check import \
    NonNegativeBinaryInputError

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _conv_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _timm_resnet18():
    torch.manual_seed(0)
    return timm.create_model('resnet18', pretrained=False, num_classes=10)


def _mmpretrain_resnet18():
    torch.manual_seed(0)
    return MODELS.build(
        dict(type='ImageClassifier',
             backbone=dict(type='ResNet', depth=18),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=10,
                       in_channels=512)))


@pytest.mark.parametrize('build,first', [(_timm_resnet18, 'conv1'),
                                         (_mmpretrain_resnet18,
                                          'backbone.conv1')])
def test_binarize_resnet18(build, first):
    model = build()
    names = _conv_names(model)
    weights = {n: m.weight for n, m in model.named_modules()
               if isinstance(m, nn.Conv2d)}
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    report = binarize(model)
    assert report.model is model and report.first_conv == first
    assert report.converted == [n for n in names if n != first]
    assert binary_conv_names(model) == report.converted
    for name, m in model.named_modules():
        if name == first:
            assert type(m) is nn.Conv2d
        elif name in weights:
            assert type(m) is IRConv2d
            assert m.weight is weights[name]  # same Parameter, same values
    assert [m for m in model.modules() if isinstance(m, nn.Linear)] == linears
    assert all(type(m) is nn.Linear for m in linears)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(m.weight.grad is not None for m in model.modules()
               if isinstance(m, IRConv2d))


def test_geometry_is_kept():
    model = _timm_resnet18()
    old = model.layer2[0].downsample[0]
    binarize(model)
    new = model.layer2[0].downsample[0]
    assert type(new) is IRConv2d
    for attr in ('in_channels', 'out_channels', 'kernel_size', 'stride',
                 'padding', 'dilation', 'groups', 'padding_mode'):
        assert getattr(new, attr) == getattr(old, attr)
    assert new.bias is None


def test_include_exclude():
    model = _timm_resnet18()
    report = binarize(model, include=['layer1.*', 'layer2.*'],
                      exclude=['*downsample*'])
    assert report.converted == [
        'layer1.0.conv1', 'layer1.0.conv2', 'layer1.1.conv1',
        'layer1.1.conv2', 'layer2.0.conv1', 'layer2.0.conv2',
        'layer2.1.conv1', 'layer2.1.conv2'
    ]
    assert report.skipped['layer2.0.downsample.0'] == 'matched by exclude'
    assert type(model.layer3[0].conv1) is nn.Conv2d
    # keep_first=False also converts the stem
    model = _timm_resnet18()
    report = binarize(model, keep_first=False, include=['conv1'])
    assert report.converted == ['conv1'] and report.first_conv is None


def test_unknown_pattern_lists_names():
    model = _timm_resnet18()
    with pytest.raises(ValueError, match='layer9') as err:
        binarize(model, exclude=['layer9.*'])
    assert 'layer1.0.conv1' in str(err.value)
    with pytest.raises(ValueError, match='include'):
        binarize(model, include=['nope'])
    assert not binary_conv_names(model)  # nothing changed on error


def test_no_conv_model_raises():
    with pytest.raises(ValueError, match='no nn.Conv2d'):
        binarize(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))


def test_unbinarize_restores_full_precision():
    model = _timm_resnet18().eval()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    params = dict(model.named_parameters())
    binarize(model)
    assert not torch.allclose(model(x), expected)
    report = unbinarize(model)
    assert len(report.converted) == 19
    assert all(type(m) is nn.Conv2d for m in model.modules()
               if isinstance(m, nn.Conv2d))
    assert dict(model.named_parameters()) == params
    assert torch.equal(model(x), expected)


def test_not_inplace_leaves_original():
    model = _timm_resnet18()
    report = binarize(model, inplace=False)
    assert report.model is not model and not binary_conv_names(model)
    assert len(binary_conv_names(report.model)) == 19


def test_first_conv_by_execution_order():

    class Net(nn.Module):

        def __init__(self):
            super().__init__()
            self.head = nn.Conv2d(8, 8, 3, padding=1)  # registered first
            self.stem = nn.Conv2d(3, 8, 3, padding=1)  # runs first

        def forward(self, x):
            return self.head(self.stem(x))

    report = binarize(Net(), inplace=False)
    assert report.first_conv == 'head' and report.converted == ['stem']
    net = Net().train()
    report = binarize(net, example_input=torch.zeros(1, 3, 4, 4))
    assert report.first_conv == 'stem' and report.converted == ['head']
    assert net.training


def test_conv_subclasses_and_shared_modules():
    from timm.layers import Conv2dSame
    shared = nn.Conv2d(4, 4, 3, padding=1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Conv2dSame(4, 4, 3, stride=2),
                          shared, nn.Sequential(shared))
    with pytest.warns(UserWarning, match='Conv2dSame'):
        report = binarize(model)
    assert 'subclass' in report.skipped['1']
    assert type(model[1]) is Conv2dSame
    assert type(model[2]) is IRConv2d and model[3][0] is model[2]


def test_conv_cfg_options_and_relu_swap():
    model = _timm_resnet18()
    binarize(model, conv_cfg=dict(type='IRConv2d', sign='approx'))
    assert model.layer1[0].conv1.sign_method == 'approx'
    with pytest.deprecated_call(match='replace_activations'):
        names = relu_to_hardtanh(model)
    assert 'act1' in names and 'layer4.1.act2' in names
    assert not any(type(m) is nn.ReLU for m in model.modules())
    assert type(model.act1) is nn.Hardtanh


def test_binarized_backbone_timm():
    backbone = MODELS.build(
        dict(type='BinarizedBackbone',
             backbone=dict(type='TIMMBackbone', model_name='resnet18',
                           pretrained=False),
             exclude=['*downsample*']))
    assert isinstance(backbone, BinarizedBackbone)
    # ReLUs replaced by default; the report says where
    assert len(backbone.activation_report.replaced) == 17
    assert backbone.binarize_report.activations is backbone.activation_report
    assert not any(type(m) is nn.ReLU for m in backbone.modules())
    names = binary_conv_names(backbone)
    assert len(names) == 16 and all('downsample' not in n for n in names)
    assert backbone.binarize_report.first_conv == 'timm_model.conv1'
    feats = backbone(torch.randn(2, 3, 32, 32))
    assert feats[-1].shape == (2, 512, 1, 1)


@pytest.mark.parametrize('name,num_binary', [
    ('irnet_mmpretrain-resnet18-convcfg_1xb128_cifar10.py', 20),
    ('irnet_mmpretrain-resnet18-binarized_1xb128_cifar10.py', 16),
    ('irnet_timm-resnet18_1xb128_cifar10.py', 16),
])
def test_example_configs_build(name, num_binary):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'examples', name))
    assert any(h['type'] == 'EDEHook' for h in cfg.custom_hooks)
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert len(binary_conv_names(model)) == num_binary
    assert not any(type(m) is nn.ReLU for m in model.modules())
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()


def test_module_held_under_two_names_is_replaced_everywhere():
    import torch.nn as nn
    from skd_bnn_mm.models.layers import IRConv2d
    from skd_bnn_mm.models.utils import binarize
    shared = nn.Conv2d(4, 4, 3, padding=1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    model.add_module('a', shared)
    model.add_module('b', shared)
    binarize(model)
    assert isinstance(model.a, IRConv2d) and model.a is model.b


def test_binarized_backbone_old_option_name_and_opt_out():
    relu_cfg = dict(type='TIMMBackbone', model_name='resnet18',
                    pretrained=False)
    with pytest.deprecated_call(match='replace_relu_with_hardtanh'):
        old = MODELS.build(dict(type='BinarizedBackbone', backbone=relu_cfg,
                                replace_relu_with_hardtanh=True))
    assert len(old.activation_report.replaced) == 17
    # opting out warns at build and stops at the first forward
    with pytest.warns(UserWarning, match='17 activation modules \\(ReLU\\)'):
        kept = MODELS.build(dict(type='BinarizedBackbone', backbone=relu_cfg,
                                 replace_activations=False))
    assert kept.activation_report is None
    with pytest.raises(NonNegativeBinaryInputError,
                       match='timm_model.layer1.0.conv1 \\(after '
                       'backbone.timm_model.maxpool, MaxPool2d; last '
                       'activation before it: backbone.timm_model.act1 '
                       '\\(ReLU\\)\\)'):
        kept(torch.randn(2, 3, 16, 16))
    # input_check=None: no check at all
    unchecked = MODELS.build(
        dict(type='BinarizedBackbone', backbone=relu_cfg,
             replace_activations=False, input_check=None))
    assert unchecked._input_check is None
    unchecked(torch.randn(2, 3, 16, 16))


def test_binarize_warns_about_relu_unless_replaced():
    with pytest.warns(UserWarning, match='replace_activations=True'):
        binarize(_timm_resnet18())
    model = _timm_resnet18()
    report = binarize(model, replace_activations=True,
                      act_cfg=dict(type='Clamp', min=-0.5, max=0.5))
    assert len(report.activations.replaced) == 17
    assert set(report.activations.replaced.values()) == {'ReLU -> Clamp'}
    assert model.act1.min == -0.5 and model.act1.inplace
