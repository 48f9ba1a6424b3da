"""Sign functions with selectable surrogate gradients.

``sign`` has a zero derivative almost everywhere, so binary networks train
with a surrogate backward pass. Three are provided, chosen by name:

- ``'ede'``: Error Decay Estimator of IR-Net,
  ``d/dx ~= k * t * (1 - tanh(t * x) ** 2)``; ``k`` and ``t`` follow a
  per-epoch schedule (see :func:`skd_bnn_mm.engine.hooks.ede_schedule`).
- ``'ste'``: clipped straight-through estimator, gradient 1 for
  ``|x| <= 1`` and 0 elsewhere.
- ``'approx'``: Bi-Real Net's ApproxSign, gradient ``2 - 2|x|`` for
  ``|x| < 1`` and 0 elsewhere.

Forward pass (all methods): ``+1`` for ``x >= 0`` and ``-1`` for ``x < 0``.
Exact zeros map to ``+1`` (unlike :func:`torch.sign`, which returns 0),
because a 1-bit value has only two states; NaN maps to ``-1``.
"""
from typing import Optional, Union

import torch
from torch import Tensor

SIGN_METHODS = ('ede', 'ste', 'approx')

#: EDE state at epoch 0 of the paper's schedule (``t_min = 1e-3``,
#: ``k = max(1/t, 1)``): ``k * t = 1``, i.e. an almost flat surrogate.
EDE_DEFAULT_K = 1e3
EDE_DEFAULT_T = 1e-3

Scalar = Union[float, Tensor]


def _hard_sign(x: Tensor) -> Tensor:
    """Two-valued sign: ``x >= 0 -> +1``, else ``-1`` (same dtype as x)."""
    one = torch.ones((), dtype=x.dtype, device=x.device)
    return torch.where(x >= 0, one, -one)


class _SignEDE(torch.autograd.Function):
    """Sign with the Error Decay Estimator gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, k: Tensor, t: Tensor) -> Tensor:
        ctx.save_for_backward(x, k, t)
        return _hard_sign(x)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, k, t = ctx.saved_tensors
        # in at least float32 (k, t are kept so): with bf16 activations a
        # 0-dim k or t would otherwise be rounded to bf16 (up to 0.2%)
        dtype = torch.promote_types(x.dtype, torch.float32)
        x = x.to(dtype)
        deriv = k.to(dtype) * t.to(dtype) * (1 - torch.tanh(t.to(dtype) * x)
                                             .pow(2))
        return (grad_out.to(dtype) * deriv).to(grad_out.dtype), None, None


class _SignSTE(torch.autograd.Function):
    """Sign with the clipped straight-through gradient."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return _hard_sign(x)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, = ctx.saved_tensors
        return grad_out * (x.abs() <= 1).to(grad_out.dtype)


class _SignApprox(torch.autograd.Function):
    """Sign with Bi-Real Net's piecewise-linear ApproxSign gradient."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return _hard_sign(x)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, = ctx.saved_tensors
        deriv = (2 - 2 * x.abs()).clamp_min(0)
        return grad_out * deriv.to(grad_out.dtype)


def check_sign_method(method: str) -> str:
    """Return ``method`` if known, else raise a ValueError naming the valid
    ones."""
    if method not in SIGN_METHODS:
        raise ValueError(f'Unknown sign method {method!r}; available: '
                         f'{", ".join(SIGN_METHODS)}')
    return method


def _as_scalar_tensor(value: Optional[Scalar], default: float,
                      ref: Tensor) -> Tensor:
    if value is None:
        value = default
    dtype = (torch.promote_types(ref.dtype, torch.float32)
             if ref.is_floating_point() else torch.float32)
    return torch.as_tensor(value, device=ref.device).to(dtype)


def binary_sign(x: Tensor,
                method: str = 'ede',
                k: Optional[Scalar] = None,
                t: Optional[Scalar] = None) -> Tensor:
    """Binarise ``x`` to exactly +-1 with the surrogate gradient ``method``.

    Args:
        x: input tensor.
        method: one of :data:`SIGN_METHODS`.
        k, t: EDE coefficients (floats or 0-dim tensors); only used by
            ``'ede'``. ``None`` means the schedule's epoch-0 state
            (:data:`EDE_DEFAULT_K`, :data:`EDE_DEFAULT_T`).

    Returns:
        Tensor of the shape and dtype of ``x`` holding only +1 and -1
        (0 maps to +1).
    """
    check_sign_method(method)
    if method == 'ede':
        return _SignEDE.apply(x, _as_scalar_tensor(k, EDE_DEFAULT_K, x),
                              _as_scalar_tensor(t, EDE_DEFAULT_T, x))
    if method == 'ste':
        return _SignSTE.apply(x)
    return _SignApprox.apply(x)
