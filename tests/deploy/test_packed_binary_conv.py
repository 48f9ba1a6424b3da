"""PackedBinaryConv2d: bit layout, exponents, exact equality with IRConv2d."""
import pytest
import torch

from skd_bnn_mm.deploy import (ZERO_SCALE_EXPONENT, PackedBinaryConv2d,
                               exponent_scales, pack_signs, scale_exponents,
                               to_deploy, unpack_signs)
from skd_bnn_mm.models.layers import IRConv2d


def test_pack_signs_bit_layout():
    # 9 weights per channel -> 2 bytes; first weight in the top bit, +1 = 1
    signs = torch.tensor([[1, -1, -1, 1, 1, 1, 1, 1, -1],
                          [-1, -1, -1, -1, -1, -1, -1, -1, 1]],
                         dtype=torch.float32).view(2, 1, 3, 3)
    packed = pack_signs(signs)
    assert packed.dtype == torch.uint8
    assert packed.tolist() == [[0b10011111, 0b00000000],
                               [0b00000000, 0b10000000]]
    assert torch.equal(unpack_signs(packed, (2, 1, 3, 3)), signs)


def test_pack_signs_rejects_non_binary():
    with pytest.raises(ValueError, match='exactly \\+1 or -1'):
        pack_signs(torch.tensor([[1.0, 0.0]]))


def test_scale_exponents():
    scales = torch.tensor([1.0, 0.5, 0.25, 8.0, 0.0])
    exps = scale_exponents(scales)
    assert exps.dtype == torch.int8
    assert exps.tolist() == [0, -1, -2, 3, ZERO_SCALE_EXPONENT]
    assert torch.equal(exponent_scales(exps), scales)
    with pytest.raises(ValueError, match='powers of two'):
        scale_exponents(torch.tensor([0.75]))
    with pytest.raises(ValueError, match='int8'):
        scale_exponents(torch.tensor([2.0 ** 200], dtype=torch.float64))


@pytest.mark.parametrize('kwargs', [
    dict(stride=1, padding=1, bias=False),
    dict(stride=2, padding=1, bias=True, groups=2),
    dict(stride=1, padding=2, dilation=2, bias=False,
         padding_mode='replicate'),
])
def test_equals_irconv_eval_output(kwargs):
    torch.manual_seed(0)
    conv = IRConv2d(4, 6, 3, **kwargs).eval()
    x = torch.randn(2, 4, 9, 9)
    x[0, 0, :3, :3] = 0  # exact zeros binarise to +1 in both
    packed = PackedBinaryConv2d.from_binary_conv(conv)
    with torch.no_grad():
        assert torch.equal(packed(x), conv(x))
        # same signs and power-of-two scales as the training layer
        wb = conv.standardized_weight()
        assert torch.equal(packed.signs(), torch.where(wb >= 0, 1.0, -1.0))
        assert torch.equal(packed.scales().view(-1, 1, 1, 1),
                           conv.weight_scale(wb))


def test_state_dict_is_packed_and_reloads():
    torch.manual_seed(1)
    conv = IRConv2d(16, 8, 3, padding=1, bias=False)
    packed = PackedBinaryConv2d.from_binary_conv(conv)
    state = packed.state_dict()
    assert set(state) == {'packed', 'exponent'}
    assert state['packed'].dtype == torch.uint8
    assert tuple(state['packed'].shape) == (8, (16 * 9 + 7) // 8)
    assert state['exponent'].dtype == torch.int8
    fresh = PackedBinaryConv2d.like(conv)
    x = torch.randn(1, 16, 5, 5)
    assert not torch.equal(fresh(x), packed(x))
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x), packed(x))


def test_constant_channel_gets_zero_scale():
    conv = IRConv2d(2, 3, 3, bias=False)
    with torch.no_grad():
        conv.weight[1] = 0.5  # exactly its mean: Wb = 0 -> scale 0
    packed = PackedBinaryConv2d.from_binary_conv(conv)
    assert packed.exponent[1].item() == ZERO_SCALE_EXPONENT
    x = torch.randn(1, 2, 6, 6)
    with torch.no_grad():
        out = packed(x)
        assert torch.equal(out, conv(x))
    assert torch.count_nonzero(out[:, 1]) == 0


def test_to_deploy_keeps_shared_modules_and_original():
    conv = IRConv2d(3, 3, 3, padding=1)
    model = torch.nn.Sequential(conv, torch.nn.Hardtanh(), conv).eval()
    deployed = to_deploy(model)
    assert isinstance(model[0], IRConv2d)  # original untouched
    assert isinstance(deployed[0], PackedBinaryConv2d)
    assert deployed[0] is deployed[2]
    x = torch.randn(2, 3, 7, 7)
    with torch.no_grad():
        assert torch.equal(deployed(x), model(x))
