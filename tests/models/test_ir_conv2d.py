import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_conv_layer
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS

from skd_bnn_mm.models.layers import IRConv2d

GEOM = dict(stride=2, padding=1, dilation=1, groups=2)


def _layer(sign='ede', bias=False, seed=0):
    torch.manual_seed(seed)
    conv = IRConv2d(4, 6, 3, bias=bias, sign=sign, **GEOM).double()
    return conv


def _hand_binary_weight(w):
    """Per output channel, with Python scalars: sign(Wb) * 2**round(log2)."""
    out = torch.empty_like(w)
    scales = []
    for o in range(w.shape[0]):
        vals = w[o].flatten().tolist()
        n = len(vals)
        mean = sum(vals) / n
        std = math.sqrt(sum((v - mean)**2 for v in vals) / (n - 1))
        wb = [(v - mean) / std for v in vals]
        s = 2.0**round(math.log2(sum(abs(v) for v in wb) / n))
        scales.append(s)
        out[o] = torch.tensor([s if v >= 0 else -s for v in wb],
                              dtype=w.dtype).view_as(w[o])
    return out, scales


def _ref_sign(x, k, t):
    """sign forward (0 -> +1) with gradient d/dx k*tanh(t*x)."""
    q = k * torch.tanh(t * x)
    hard = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
    return q + (hard - q).detach()


def _reference_forward(x, w, k, t):
    """IR-Net conv written directly from the formulas."""
    flat = w.view(w.shape[0], -1)
    wb = (w - flat.mean(1).view(-1, 1, 1, 1)) / flat.std(1).view(-1, 1, 1, 1)
    s = 2**torch.round(torch.log2(wb.detach().abs().mean((1, 2, 3))))
    qw = _ref_sign(wb, k, t) * s.view(-1, 1, 1, 1)
    return F.conv2d(_ref_sign(x, k, t), qw, **GEOM)


def test_forward_equals_hand_computation():
    conv = _layer(bias=True)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    x[0, 0, 0, :3] = 0.0  # exact zeros binarise to +1
    qa = torch.where(x >= 0, 1.0, -1.0).double()
    qw, _ = _hand_binary_weight(conv.weight.detach())
    expected = F.conv2d(qa, qw, conv.bias.detach(), **GEOM)
    assert torch.equal(conv(x), expected)


def test_conv_sees_exact_binary_tensors(monkeypatch):
    conv = _layer()
    seen = {}
    real_conv2d = F.conv2d

    def spy(inp, weight, *args, **kwargs):
        seen['inp'], seen['weight'], seen['bias'] = inp, weight, args[0]
        return real_conv2d(inp, weight, *args, **kwargs)

    monkeypatch.setattr(F, 'conv2d', spy)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    x[:, :, 1, 1] = 0.0
    conv(x)
    assert set(seen['inp'].unique().tolist()) == {-1.0, 1.0}
    assert seen['bias'] is None and conv.bias is None
    w = seen['weight']
    for o in range(w.shape[0]):
        mags = w[o].abs().unique()
        assert mags.numel() == 1  # exactly +-s
        log2s = math.log2(mags.item())
        assert log2s == round(log2s)  # power of two
        assert set(w[o].sign().unique().tolist()) == {-1.0, 1.0}
    _, scales = _hand_binary_weight(conv.weight.detach())
    assert w.abs().amax((1, 2, 3)).tolist() == scales


@pytest.mark.parametrize('k,t', [(1000.0, 1e-3), (1.5, 2.0), (1.0, 10.0)])
def test_gradients_match_ede_formula(k, t):
    conv = _layer()
    conv.set_ede(k, t)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64, requires_grad=True)
    g_out = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    gx, gw = torch.autograd.grad(conv(x), (x, conv.weight), g_out)

    # input: transposed conv of the upstream gradient with Qw, times EDE'(x)
    qw, _ = _hand_binary_weight(conv.weight.detach())
    ede = k * t * (1 - torch.tanh(t * x.detach())**2)
    back = F.conv_transpose2d(g_out, qw, stride=2, padding=1, groups=2,
                              output_padding=0)
    back = F.pad(back, (0, x.shape[3] - back.shape[3],
                        0, x.shape[2] - back.shape[2]))
    assert torch.allclose(gx, back * ede, rtol=1e-10, atol=1e-12)

    # latent weights: autograd through an explicit reference implementation
    w = conv.weight.detach().clone().requires_grad_()
    xr = x.detach().clone().requires_grad_()
    y_ref = _reference_forward(xr, w, k, t)
    assert torch.equal(y_ref, conv(x))
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (xr, w), g_out)
    assert torch.allclose(gw, gw_ref, rtol=1e-9, atol=1e-12)
    assert torch.allclose(gx, gx_ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize('sign,deriv', [
    ('ste', lambda x: (x.abs() <= 1).double()),
    ('approx', lambda x: (2 - 2 * x.abs()).clamp_min(0)),
])
def test_other_sign_methods_input_gradient(sign, deriv):
    conv = IRConv2d(3, 4, 1, bias=False, sign=sign).double()
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, requires_grad=True) * 1.5
    g_out = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    gx, = torch.autograd.grad(conv(x), x, g_out)
    qw, _ = _hand_binary_weight(conv.weight.detach())
    expected = torch.einsum('bohw,oi->bihw', g_out, qw[:, :, 0, 0])
    assert torch.allclose(gx, expected * deriv(x.detach()))


def test_no_gradient_through_scale():
    conv = _layer()
    wb = conv.standardized_weight()
    assert wb.requires_grad
    s = conv.weight_scale(wb)
    assert s.shape == (6, 1, 1, 1) and not s.requires_grad
    # Wb is standardised: zero mean and unit unbiased std per channel
    flat = wb.detach().view(6, -1)
    assert torch.allclose(flat.mean(1), torch.zeros(6, dtype=flat.dtype),
                          atol=1e-12)
    assert torch.allclose(flat.std(1), torch.ones(6, dtype=flat.dtype))
    assert torch.equal(conv.binary_weight().detach(),
                       _hand_binary_weight(conv.weight.detach())[0])


def test_ede_buffers_and_set_ede():
    conv = IRConv2d(2, 2, 3)
    k_buf, t_buf = conv.ede_k, conv.ede_t
    assert k_buf.dim() == 0 and k_buf.dtype == torch.float32
    assert (k_buf.item(), t_buf.item()) == pytest.approx((1000.0, 1e-3))
    conv.set_ede(2.0, 0.5)
    assert conv.ede_k is k_buf and conv.ede_t is t_buf  # written in place
    assert (k_buf.item(), t_buf.item()) == (2.0, 0.5)
    sd = conv.state_dict()
    assert sd['ede_k'].item() == 2.0 and sd['ede_t'].item() == 0.5
    other = IRConv2d(2, 2, 3)
    other.load_state_dict(sd)
    assert other.ede_t.item() == 0.5
    with pytest.raises(ValueError):
        conv.set_ede(1.0, 0.0)


def test_extra_repr_and_bad_arguments():
    assert 'sign=approx' in repr(IRConv2d(2, 3, 3, sign='approx'))
    with pytest.raises(ValueError, match='ede, ste, approx'):
        IRConv2d(2, 3, 3, sign='nope')
    with pytest.raises(ValueError, match='at least 2 weights'):
        IRConv2d(4, 4, 1, groups=4)


def test_registered_in_both_registries():
    assert MODELS.get('IRConv2d') is IRConv2d
    assert ROOT_MODELS.module_dict['IRConv2d'] is IRConv2d


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmengine'])
def test_build_conv_layer(scope):
    with DefaultScope.overwrite_default_scope(scope):
        conv = build_conv_layer(dict(type='IRConv2d', sign='ste'), 3, 8, 3,
                                padding=1, bias=False)
    assert type(conv) is IRConv2d and conv.sign_method == 'ste'
    assert conv(torch.randn(1, 3, 4, 4)).shape == (1, 8, 4, 4)


def test_inside_mmpretrain_resnet_cifar():
    net = MODELS.build(
        dict(type='ResNet_CIFAR', depth=18,
             conv_cfg=dict(type='IRConv2d')))
    net.init_weights()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20 and all(type(m) is IRConv2d for m in convs)
    out = net(torch.randn(2, 3, 32, 32))[-1]
    assert out.shape == (2, 512, 4, 4)
    out.sum().backward()
    assert all(m.weight.grad is not None for m in convs)


def test_inside_mmpretrain_vgg_with_bias():
    # VGG without norm layers builds its convs with bias=True: the bias stays
    # a full-precision parameter added to the binary conv output
    net = MODELS.build(
        dict(type='VGG', depth=11, norm_cfg=None, num_stages=3,
             dilations=(1, 1, 1),
             conv_cfg=dict(type='IRConv2d'), out_indices=(2, )))
    convs = [m for m in net.modules() if isinstance(m, IRConv2d)]
    assert convs and all(m.bias is not None for m in convs)
    out = net(torch.randn(2, 3, 16, 16))[-1]
    out.sum().backward()
    assert convs[1].bias.grad is not None


# ------------------------------------------------- layouts and autocast
@pytest.mark.parametrize('cin,cout,stride,groups', [(16, 32, 1, 1),
                                                    (64, 64, 2, 1),
                                                    (8, 12, 2, 2)])
def test_binary_conv_channels_last_is_bitwise_exact(cin, cout, stride,
                                                    groups):
    torch.manual_seed(cin + stride)
    conv = IRConv2d(cin, cout, 3, stride, 1, groups=groups, bias=False)
    conv_cl = copy.deepcopy(conv).to(memory_format=torch.channels_last)
    x = torch.randn(3, cin, 9, 9)
    x[0, :, 0, :4] = 0.0  # exact zeros binarise to +1 in both layouts
    y = conv(x)
    y_cl = conv_cl(x.contiguous(memory_format=torch.channels_last))
    assert y_cl.is_contiguous(memory_format=torch.channels_last) and \
        not y_cl.is_contiguous()
    # +-1 inputs times +-2^k weights: sums of small integers times 2^k,
    # exact in float32 in any summation order
    assert torch.equal(y, y_cl)
    assert y.abs().max() > 8  # not a degenerate all-small output


def test_binary_conv_bf16_autocast_is_fp32_rounded_once():
    torch.manual_seed(0)
    # 515 inputs: sums up to 515, beyond bf16's 8-bit significand, so a bf16
    # accumulator would lose ones while a float32 one rounds only at the end
    conv = IRConv2d(515, 6, 1, bias=False)
    wb = conv.standardized_weight().detach()
    scale = conv.weight_scale(wb).flatten()
    x = torch.randn(2, 515, 3, 3)
    x[0, :, 0, 0] = torch.where(wb[0, :, 0, 0] >= 0, 1.0, -1.0)
    x[1, :, 1, 1] = torch.where(wb[1, :, 0, 0] >= 0, -1.0, 1.0)
    conv3 = IRConv2d(16, 8, 3, 1, 1, bias=False)
    x3 = torch.randn(4, 16, 6, 6)
    outputs = []
    for layer, inp in ((conv, x), (conv3, x3)):
        y32 = layer(inp)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y16 = layer(inp)
        assert y32.dtype == torch.float32 and y16.dtype == torch.bfloat16
        assert torch.equal(y16.float(), y32.to(torch.bfloat16).float())
        outputs.append((y32, y16))
    (y32, y16), _ = outputs
    assert float(y32[0, 0, 0, 0]) == 515 * float(scale[0])
    assert float(y32[1, 1, 1, 1]) == -515 * float(scale[1])
    # 515 is not a bf16 number; the nearest one, 516, is what comes out
    assert float(y16[0, 0, 0, 0]) == 516 * float(scale[0])
    assert float(y16[1, 1, 1, 1]) == -516 * float(scale[1])
