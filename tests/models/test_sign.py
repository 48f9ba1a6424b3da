import math

import pytest
import torch

from skd_bnn_mm.models.layers import SIGN_METHODS, binary_sign

POINTS = [-2.0, -1.0, -0.75, -0.2, 0.0, 0.3, 0.999, 1.0, 1.5]


def _grad(method, xs, **kw):
    x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    y = binary_sign(x, method, **kw)
    g, = torch.autograd.grad(y, x, torch.ones_like(y))
    return y.detach(), g


@pytest.mark.parametrize('method', SIGN_METHODS)
def test_forward_is_two_valued_and_zero_maps_to_plus_one(method):
    x = torch.tensor([-3.0, -1e-7, 0.0, -0.0, 1e-7, 2.0])
    y = binary_sign(x, method)
    assert y.dtype == x.dtype
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]


def test_ede_gradient_matches_formula():
    k, t = 2.5, 0.7
    _, g = _grad('ede', POINTS, k=torch.tensor(k), t=torch.tensor(t))
    expected = [k * t * (1 - math.tanh(t * x)**2) for x in POINTS]
    assert g.tolist() == pytest.approx(expected, rel=1e-6)


def test_ede_gradient_is_derivative_of_k_tanh():
    # independent check: central finite difference of k * tanh(t * x)
    k, t, h = 3.0, 4.0, 1e-6
    _, g = _grad('ede', POINTS, k=k, t=t)
    fd = [(k * math.tanh(t * (x + h)) - k * math.tanh(t * (x - h))) / (2 * h)
          for x in POINTS]
    assert g.tolist() == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_ede_default_is_epoch_zero_state():
    # k = 1/t_min, t = t_min = 1e-3: gradient k*t*(1 - tanh^2) ~ 1
    _, g = _grad('ede', [0.0, 1.0])
    assert g.tolist() == pytest.approx([1.0, 1 - math.tanh(1e-3)**2])


def test_ste_gradient_is_clipped_identity():
    _, g = _grad('ste', POINTS)
    assert g.tolist() == [1.0 if abs(x) <= 1 else 0.0 for x in POINTS]


def test_approx_gradient_is_piecewise_linear():
    _, g = _grad('approx', POINTS)
    expected = [2 - 2 * abs(x) if abs(x) < 1 else 0.0 for x in POINTS]
    assert g.tolist() == pytest.approx(expected)


def test_upstream_gradient_is_multiplied():
    x = torch.tensor([0.5, -0.5], requires_grad=True)
    y = binary_sign(x, 'approx')
    g, = torch.autograd.grad(y, x, torch.tensor([3.0, -2.0]))
    assert g.tolist() == [3.0, -2.0]


def test_unknown_method_lists_available():
    with pytest.raises(ValueError) as err:
        binary_sign(torch.zeros(2), 'bogus')
    for name in SIGN_METHODS:
        assert name in str(err.value)


def test_ede_gradient_of_bf16_activations_uses_float32_k_and_t():
    """Autocast gives bf16 activations; t = 10**(-3 + 4 * e / E) is not a
    bf16 number. The gradient must be the float32 formula at the bf16
    input, rounded once to bf16 (not the formula with k, t rounded)."""
    k, t = 1.0, 10**(-3 + 4 * 517 / 700)  # the paper's schedule, epoch 517
    x32 = torch.tensor(POINTS) * 0.1
    x = x32.bfloat16().requires_grad_()
    up = torch.full_like(x, 0.5)
    y = binary_sign(x, 'ede', k=torch.tensor(k), t=torch.tensor(t))
    g, = torch.autograd.grad(y, x, up)
    assert y.dtype == g.dtype == torch.bfloat16
    xf = x.detach().float()
    expected = (0.5 * k * t * (1 - torch.tanh(t * xf)**2)).bfloat16()
    assert torch.equal(g, expected)
    rounded_t = float(torch.tensor(t).bfloat16())
    assert rounded_t != pytest.approx(t, rel=1e-4)  # the test can tell


@pytest.mark.parametrize('epoch', [517, 650])
def test_ede_gradient_of_fp16_activations_is_float32_rounded_once(epoch):
    """fp16 autocast: the gradient is the float32 formula at the fp16 input,
    rounded once to fp16. Computed in fp16 (k, t and tanh rounded, then
    ``1 - tanh^2`` cancelling) it differs."""
    t = 10**(-3 + 4 * epoch / 700)  # the paper's schedule
    k = max(1 / t, 1.0)
    x = (torch.linspace(-1.5, 1.5, 301) / t).half().requires_grad_()
    up = torch.full_like(x, 0.37)
    y = binary_sign(x, 'ede', k=torch.tensor(k), t=torch.tensor(t))
    g, = torch.autograd.grad(y, x, up)
    assert y.dtype == g.dtype == torch.float16
    xf = x.detach().float()
    k32, t32 = torch.tensor(k), torch.tensor(t)  # float32 buffers
    expected = (up.float() * (k32 * t32 * (1 - torch.tanh(t32 * xf)**2))
                ).half()
    assert torch.equal(g, expected)
    k16, t16, x16 = (torch.tensor(k).half(), torch.tensor(t).half(),
                     x.detach())
    naive = up * k16 * t16 * (1 - torch.tanh(t16 * x16)**2)
    assert not torch.equal(naive, expected)  # the test can tell


def test_ede_gradient_with_scaled_upstream_does_not_overflow():
    """Loss scaling makes the upstream gradient large; ``k = 1000`` at the
    start of training. Multiplied in fp16 as ``up * k * t``, ``up * k``
    overflows (inf, and GradScaler would skip every step) although the
    result, ``up * k * t``, is small; in float32 it does not."""
    k, t = 1e3, 1e-3  # epoch 0: k * t = 1
    x = torch.tensor([-0.5, 0.0, 0.25, 2.0], dtype=torch.float16,
                     requires_grad=True)
    up = torch.full_like(x, 300.0)  # e.g. 2^16 * a gradient of ~0.005
    y = binary_sign(x, 'ede', k=torch.tensor(k), t=torch.tensor(t))
    g, = torch.autograd.grad(y, x, up)
    xf = x.detach().float()
    k32, t32 = torch.tensor(k), torch.tensor(t)
    assert torch.equal(g, (300.0 * (k32 * t32 * (1 - torch.tanh(t32 * xf)**2)))
                       .half())
    assert torch.isfinite(g).all() and g.max() == 300.0
    naive = up * torch.tensor(k).half() * torch.tensor(t).half()
    assert torch.isinf(naive).all()  # the test can tell
