"""The binary conv under fp16 autocast: the weight path stays float32, the
binary products and power-of-two scales are exact in fp16, and the output is
the float32 one rounded once (exact for every ResNet-20 conv)."""
import pytest
import torch

from skd_bnn_mm.models.layers import IRConv2d


def _conv(cin, cout, seed=0):
    torch.manual_seed(seed)
    conv = IRConv2d(cin, cout, 3, 1, 1, bias=False)
    torch.nn.init.kaiming_normal_(conv.weight)
    return conv


def test_standardised_weight_and_scale_stay_float32_under_autocast():
    """mean/std/sub/div are not autocast ops, so ``Wb`` and ``s`` are the
    float32 values, bitwise. Computed in fp16 ``Wb`` would carry 11
    significant bits (the teacher's real conv and the EDE weight gradient
    read it)."""
    conv = _conv(64, 64)
    wb32 = conv.standardized_weight()
    with torch.autocast('cpu', dtype=torch.float16):
        wb = conv.standardized_weight()
        s = conv.weight_scale(wb)
    assert wb.dtype == s.dtype == torch.float32
    assert torch.equal(wb, wb32)
    assert torch.equal(s, conv.weight_scale(wb32))
    w16 = conv.weight.detach().half().reshape(64, -1)
    naive = (w16 - w16.mean(1, keepdim=True)) / w16.std(1, keepdim=True)
    err = (naive.float() - wb32.detach().reshape(64, -1)).abs().max()
    assert err > 1e-4  # the test can tell


@pytest.mark.parametrize('fan', [2, 27, 576, 4608, 2**20])
def test_weight_scales_are_exact_fp16_numbers(fan):
    """``s = 2^round(log2(mean|Wb|))`` with ``Wb`` standardised: mean|Wb|
    lies between ~sqrt(2/fan) (two non-zero weights) and 1, so
    2^-11 <= s <= 1 for any fan below 2^21, inside fp16's normal range
    (2^-14 .. 2^15): ``+-s`` is exact in fp16 for every conv."""
    for w in (torch.randn(3, fan), torch.zeros(3, fan)):
        if not w.any():  # the smallest mean|Wb|: two opposite weights
            w[:, 0], w[:, 1] = 1.0, -1.0
        mean = w.mean(1, keepdim=True)
        wb = (w - mean) / w.std(1, keepdim=True)
        s = IRConv2d.weight_scale(wb.view(3, fan, 1, 1)).flatten()
        assert (s <= 1).all() and (s >= 2.0**-11).all(), s
        assert torch.equal(s.half().float(), s)


@pytest.mark.parametrize('cin', [16, 32, 64])
def test_resnet20_binary_conv_is_exact_in_fp16(cin):
    """K = 9 * cin <= 576 ones times +-s: sums up to 576 s, exact in fp16
    (integers up to 2048); with float32 accumulation the fp16 output is the
    float32 output, bitwise."""
    conv = _conv(cin, cin, seed=cin)
    x = torch.randn(4, cin, 8, 8)
    y32 = conv(x)
    with torch.autocast('cpu', dtype=torch.float16):
        y16 = conv(x)
    assert y16.dtype == torch.float16
    assert torch.equal(y16.float(), y32)


def test_wide_binary_conv_in_fp16_is_float32_rounded_once():
    """VGG-Small's 512-channel convs sum K = 4608 terms: beyond 2048 s the
    fp16 output is the float32 sum rounded once (4602 s -> 4600 s), not an
    fp16 accumulation."""
    conv = IRConv2d(512, 2, 3, 1, 0, bias=False)
    wb = conv.standardized_weight().detach()
    s = conv.weight_scale(wb).flatten()
    sign = torch.where(wb >= 0, 1.0, -1.0)
    x = sign[:1].clone()  # agrees with output channel 0 everywhere ...
    x[0, :1, 0, 0] *= -1  # ... but one input: sum 4606
    x[0, 1, 0, :2] *= -1  # ... and two more: 4602
    y32 = conv(x)
    with torch.autocast('cpu', dtype=torch.float16):
        y16 = conv(x)
    assert float(y32[0, 0, 0, 0]) == (4608 - 6) * float(s[0])
    assert torch.equal(y16.float(), y32.half().float())
    assert float(y16[0, 0, 0, 0]) == 4600 * float(s[0])  # nearest fp16
