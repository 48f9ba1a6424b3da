"""IR-Net binary convolution: 1-bit weights and 1-bit activations."""
from typing import Union

import torch
import torch.nn as nn
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmpretrain.registry import MODELS
from torch import Tensor

from .sign import EDE_DEFAULT_K, EDE_DEFAULT_T, binary_sign, check_sign_method

_STD_EPS = 1e-12


@MODELS.register_module('IRConv2d')
class IRConv2d(nn.Conv2d):
    """Binary conv of IR-Net with latent real weights.

    Forward pass, per output channel of the latent weight ``W``:
    ``Wb = (W - mean) / std`` (over ``in/groups * kh * kw``, unbiased std),
    ``s = 2 ** round(log2(mean|Wb|))`` (no gradient), ``Qw = sign(Wb) * s``,
    ``Qa = sign(x)``, ``y = conv2d(Qa, Qw)``. Balancing and standardising
    maximises the information of the binary weights; the power-of-two scale
    is a bit shift at inference.

    The constructor matches :class:`torch.nn.Conv2d` (so mmcv's
    ``build_conv_layer(dict(type='IRConv2d'), ...)`` and converters can create
    it like a plain conv) plus ``sign``. IR-Net uses no bias; if one is asked
    for (``bias=True``, the ``nn.Conv2d`` default, also what mmpretrain's VGG
    passes without norm layers) it stays full precision and is added to the
    binary conv output: a per-channel offset costs nothing at 1-bit inference
    because it folds into the following threshold/BN.

    With ``padding_mode='zeros'`` the padded border is 0, not +-1, as in the
    reference implementation; every other input the conv sees is exactly
    +-1.

    Buffers ``ede_k`` and ``ede_t`` (0-dim, float32, saved in checkpoints)
    hold the EDE coefficients shared by weights and activations. They start at
    the paper's epoch-0 schedule state (``k = 1000``, ``t = 1e-3``, i.e.
    ``k * t = 1``) and are updated by :class:`~skd_bnn_mm.engine.hooks.EDEHook`
    through :meth:`set_ede`.

    Args:
        sign (str): surrogate gradient of the sign function, one of
            :data:`~skd_bnn_mm.models.layers.SIGN_METHODS`.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size,
                 stride=1,
                 padding: Union[str, int, tuple] = 0,
                 dilation=1,
                 groups: int = 1,
                 bias: bool = True,
                 padding_mode: str = 'zeros',
                 device=None,
                 dtype=None,
                 *,
                 sign: str = 'ede') -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, padding_mode,
                         device, dtype)
        fan = self.weight[0].numel()
        if fan < 2:
            raise ValueError(
                f'IRConv2d needs at least 2 weights per output channel to '
                f'standardise them, got in_channels/groups*kh*kw={fan}; '
                f'keep this conv full precision (e.g. exclude it in '
                f'binarize()).')
        self.sign_method = check_sign_method(sign)
        self.register_buffer(
            'ede_k', torch.tensor(EDE_DEFAULT_K, dtype=torch.float32,
                                  device=device))
        self.register_buffer(
            'ede_t', torch.tensor(EDE_DEFAULT_T, dtype=torch.float32,
                                  device=device))

    def set_ede(self, k: float, t: float) -> None:
        """Write the EDE coefficients in place, on the module's device."""
        k, t = float(k), float(t)
        if not (k > 0 and t > 0):
            raise ValueError(f'EDE needs k > 0 and t > 0, got k={k}, t={t}')
        self.ede_k.fill_(k)
        self.ede_t.fill_(t)

    def standardized_weight(self) -> Tensor:
        """Balanced, standardised latent weight ``Wb`` (differentiable)."""
        w = self.weight
        flat = w.reshape(w.shape[0], -1)
        mean = flat.mean(dim=1).view(-1, 1, 1, 1)
        std = flat.std(dim=1).clamp_min(_STD_EPS).view(-1, 1, 1, 1)
        return (w - mean) / std

    @staticmethod
    def weight_scale(wb: Tensor) -> Tensor:
        """Power-of-two scale ``s`` per output channel, ``[out, 1, 1, 1]``,
        without gradient."""
        with torch.no_grad():
            mean_abs = wb.detach().abs().reshape(wb.shape[0], -1).mean(dim=1)
            s = torch.pow(2.0, torch.round(torch.log2(mean_abs)))
        return s.view(-1, 1, 1, 1).to(wb.dtype)

    def binary_weight(self) -> Tensor:
        """``sign(Wb) * s``: the weights the conv uses, values exactly +-s."""
        return self._quantize_weight(self.standardized_weight())

    def _quantize_weight(self, wb: Tensor) -> Tensor:
        return self._sign(wb) * self.weight_scale(wb)

    def binarize_input(self, x: Tensor) -> Tensor:
        """``sign(x)`` with the layer's surrogate gradient."""
        return self._sign(x)

    def _sign(self, x: Tensor) -> Tensor:
        return binary_sign(x, self.sign_method, self.ede_k, self.ede_t)

    def forward(self, x: Tensor) -> Tensor:
        qa = self.binarize_input(x)
        return self._conv_forward(qa, self.binary_weight(), self.bias)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, sign={self.sign_method}'


# mmcv's build_conv_layer looks in the current default scope's registry and
# then its parents; registering in mmengine's root registry as well makes
# ``conv_cfg=dict(type='IRConv2d')`` work under any scope, or none.
if 'IRConv2d' not in MMENGINE_MODELS.module_dict:
    MMENGINE_MODELS.register_module('IRConv2d', module=IRConv2d)
