"""Sign agreement of binary vs real convs, against direct computations."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from skd_bnn_mm.analysis import sign_agreement
from skd_bnn_mm.models.layers import IRConv2d


def pos(t):
    return t >= 0


def test_matches_direct_computation():
    torch.manual_seed(0)
    conv1 = IRConv2d(3, 8, 3, padding=1, bias=False)
    conv2 = IRConv2d(8, 4, 3, stride=2, padding=1, bias=True)
    model = nn.Sequential(conv1, nn.BatchNorm2d(8), nn.Hardtanh(),
                          conv2).eval()
    x = torch.randn(4, 3, 10, 10)
    values = sign_agreement(model, x)
    assert list(values) == ['0', '3']

    with torch.no_grad():
        y1 = conv1(x)
        r1 = F.conv2d(x, conv1.standardized_weight(), padding=1)
        h = model[2](model[1](y1))
        y2 = conv2(h)
        r2 = F.conv2d(h, conv2.standardized_weight(), conv2.bias, stride=2,
                      padding=1)
    same1 = int((pos(y1) == pos(r1)).sum())
    same2 = int((pos(y2) == pos(r2)).sum())
    assert values['0'] == same1 / y1.numel()
    assert values['3'] == same2 / y2.numel()
    assert 0.5 < values['0'] < 1.0


def test_binary_inputs_and_balanced_weights_agree_everywhere():
    """With +-1 inputs and latent weights that already are a balanced +-c
    pattern, Wb is a positive multiple of sign(Wb), so the two convs differ
    by a positive factor per channel and every sign agrees (0 -> +1 in
    both). Two weights per channel keep every sum exact."""
    conv = IRConv2d(2, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[0.3, -0.3], [-0.3, 0.3],
                                        [0.7, -0.7]]).view(3, 2, 1, 1))
    x = torch.where(torch.randn(5, 2, 6, 6) >= 0, 1.0, -1.0)
    with torch.no_grad():
        assert bool((conv(x) == 0).any())  # ties are part of the check
    assert sign_agreement(conv, x) == {'': 1.0}
    # a real-valued input breaks the equivalence
    assert sign_agreement(conv, torch.randn(5, 2, 6, 6))[''] < 1.0


def test_model_without_binary_conv_is_refused():
    with pytest.raises(ValueError, match='no binary conv'):
        sign_agreement(nn.Conv2d(1, 1, 3), torch.zeros(1, 1, 4, 4))
