"""Inference-only binary conv that stores its weights as packed sign bits.

A trained :class:`~skd_bnn_mm.models.layers.IRConv2d` keeps latent real
weights and recomputes ``sign(Wb) * s`` at every call. For deployment only
the result matters: one bit per weight and one power-of-two scale per output
channel. :class:`PackedBinaryConv2d` holds exactly that, so its state_dict is
what a 1-bit file stores, and its output is bit-identical to the training
layer's eval output.

Bit layout (shared with the ``.bnn`` format, see ``docs/deploy.md``):

- ``packed``: ``uint8 [out, ceil(in/groups * kh * kw / 8)]``; row ``o`` holds
  the signs of output channel ``o``'s weights in PyTorch's C order over
  ``(in/groups, kh, kw)``, 8 per byte, first weight in the most significant
  bit (``numpy.packbits`` default). Bit 1 means ``+1`` (``Wb >= 0``), bit 0
  means ``-1``; padding bits at the end of a row are 0.
- ``exponent``: ``int8 [out]``; the scale of channel ``o`` is
  ``2 ** exponent[o]``, except ``-128`` (:data:`ZERO_SCALE_EXPONENT`), which
  means scale 0 (a channel whose latent weights are all equal standardises
  to 0 and so contributes nothing).
"""
from typing import Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.utils import _pair

#: ``exponent`` value that stands for a zero scale.
ZERO_SCALE_EXPONENT = -128


def pack_signs(signs: Tensor) -> Tensor:
    """Pack a ``[out, ...]`` tensor of +-1 into ``uint8 [out, ceil(n/8)]``.

    ``n`` is the number of weights per output channel; +1 becomes bit 1.
    """
    flat = signs.detach().reshape(signs.shape[0], -1).cpu()
    bad = flat.abs() != 1
    if bool(bad.any()):
        raise ValueError('pack_signs() needs values that are exactly +1 or '
                         f'-1; found {int(bad.sum())} other values.')
    bits = (flat > 0).numpy()
    return torch.from_numpy(np.packbits(bits, axis=1, bitorder='big'))


def unpack_signs(packed: Tensor, shape: Tuple[int, ...],
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """Inverse of :func:`pack_signs`: +-1 values of ``shape``."""
    out = shape[0]
    count = int(np.prod(shape[1:]))
    bits = np.unpackbits(packed.detach().cpu().numpy(), axis=1,
                         count=count, bitorder='big')
    if bits.shape != (out, count):
        raise ValueError(f'packed bits of shape {tuple(packed.shape)} do not '
                         f'fit a weight of shape {tuple(shape)}')
    signs = torch.from_numpy(bits.astype(np.float32) * 2 - 1)
    return signs.reshape(shape).to(dtype=dtype, device=packed.device)


def scale_exponents(scale: Tensor) -> Tensor:
    """``int8`` exponents ``e`` with ``scale == 2 ** e`` (0 -> -128).

    Raises ValueError when a scale is not an exact power of two or its
    exponent does not fit in ``[-127, 127]``.
    """
    s = scale.detach().reshape(-1).to(torch.float64).cpu()
    zero = s == 0
    mantissa, exp = torch.frexp(torch.where(zero, torch.ones_like(s), s))
    # frexp gives s = m * 2**exp with m in [0.5, 1): a power of two has m=0.5
    if not bool(((mantissa == 0.5) | zero).all()):
        raise ValueError('binary conv scales must be positive powers of two '
                         f'(or 0); got {s[(mantissa != 0.5) & ~zero][:5]}')
    exp = exp - 1
    if bool(((exp < -127) | (exp > 127))[~zero].any()):
        raise ValueError(f'scale exponents {exp[~zero].min()}..'
                         f'{exp[~zero].max()} do not fit in int8 [-127, 127]')
    exp = torch.where(zero, torch.full_like(exp, ZERO_SCALE_EXPONENT), exp)
    return exp.to(torch.int8)


def exponent_scales(exponent: Tensor,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """Scales ``2 ** exponent`` (``-128 -> 0``), exact for every int8."""
    e = exponent.to(torch.float64)
    s = torch.pow(torch.full_like(e, 2.0), e)
    s = torch.where(exponent == ZERO_SCALE_EXPONENT, torch.zeros_like(s), s)
    return s.to(dtype)


class PackedBinaryConv2d(nn.Module):
    """Binary conv for inference: ``conv2d(sign(x), signs * 2**exponent)``.

    ``sign`` maps ``x >= 0`` to +1 and everything else (NaN included) to -1,
    like the training layer. Padding is applied after ``sign``, so with
    ``padding_mode='zeros'`` the border is 0, as in training.

    State (all in ``state_dict``): ``packed`` (uint8 sign bits), ``exponent``
    (int8), and ``bias`` (float, only if the conv had one). The float
    weights ``±2**e`` the conv needs are rebuilt from them once, into the
    non-persistent buffer ``weight``, when the module is created and after
    every ``load_state_dict``.

    Args: those of :class:`torch.nn.Conv2d` (no ``device``/``dtype``); only
    integer or tuple padding is supported with a non-zero ``padding_mode``.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size,
                 stride=1,
                 padding: Union[str, int, tuple] = 0,
                 dilation=1,
                 groups: int = 1,
                 bias: bool = False,
                 padding_mode: str = 'zeros') -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f'in_channels ({in_channels}) and out_channels '
                             f'({out_channels}) must be divisible by groups '
                             f'({groups})')
        if padding_mode not in ('zeros', 'reflect', 'replicate', 'circular'):
            raise ValueError(f"padding_mode must be one of 'zeros', "
                             f"'reflect', 'replicate', 'circular'; got "
                             f'{padding_mode!r}')
        if padding_mode != 'zeros' and isinstance(padding, str):
            raise ValueError('PackedBinaryConv2d supports string padding only '
                             "with padding_mode='zeros'")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.padding_mode = padding_mode
        self.weight_shape = (out_channels, in_channels // groups,
                             *self.kernel_size)
        per_channel = int(np.prod(self.weight_shape[1:]))
        self.register_buffer(
            'packed',
            torch.zeros(out_channels, (per_channel + 7) // 8,
                        dtype=torch.uint8))
        self.register_buffer('exponent',
                             torch.zeros(out_channels, dtype=torch.int8))
        if bias:
            self.register_buffer('bias', torch.zeros(out_channels))
        else:
            self.bias = None
        # all bits 0 and exponent 0: every weight is -1
        self.register_buffer('weight', torch.full(self.weight_shape, -1.0),
                             persistent=False)

    @classmethod
    def like(cls, conv: nn.Module) -> 'PackedBinaryConv2d':
        """A packed conv (all -1, scale 1) of ``conv``'s geometry, to
        be filled by ``load_state_dict``."""
        return cls(conv.in_channels, conv.out_channels, conv.kernel_size,
                   conv.stride, conv.padding, conv.dilation, conv.groups,
                   bias=conv.bias is not None,
                   padding_mode=conv.padding_mode)

    @classmethod
    def from_binary_conv(cls, conv: nn.Module) -> 'PackedBinaryConv2d':
        """Freeze a trained binary conv: ``IRConv2d``, or any conv whose
        ``binary_weight()`` returns ``±s`` with one power of two ``s`` per
        output channel.

        Raises ValueError if the packed weights would not reproduce
        ``conv.binary_weight()`` exactly.
        """
        with torch.no_grad():
            ref = conv.binary_weight().detach()
        # ref is sign(Wb) * s: one magnitude per output channel, sign(0)=+1
        # (a zero-scale channel is all +0, hence all +1 bits)
        mags = ref.abs().reshape(ref.shape[0], -1)
        scale = mags.amax(dim=1)
        if not bool((mags == scale[:, None]).all()):
            raise ValueError(
                f'{type(conv).__name__}: the binary weights of some output '
                'channel have more than one magnitude; they are not '
                'sign(Wb) * s and cannot be stored as packed bits.')
        signs = torch.where(ref >= 0, 1.0, -1.0)
        new = cls.like(conv)
        new.packed.copy_(pack_signs(signs))
        new.exponent.copy_(scale_exponents(scale))
        if conv.bias is not None:
            new.bias = conv.bias.detach().clone()
        new.to(device=conv.weight.device)
        new.refresh_weight(dtype=ref.dtype)
        if not torch.equal(new.weight, ref.detach()):
            diff = (new.weight - ref).abs().max().item()
            raise ValueError(
                f'{type(conv).__name__}: its binary weights are not '
                f'sign(Wb) * 2**e (max difference {diff}); it cannot be '
                'stored as packed bits.')
        return new

    def refresh_weight(self, dtype: Optional[torch.dtype] = None) -> None:
        """Rebuild the float weight ``±2**e`` from ``packed``/``exponent``."""
        if dtype is None:
            dtype = self.weight.dtype if self.weight.is_floating_point() \
                else torch.float32
        signs = unpack_signs(self.packed, self.weight_shape, dtype)
        scale = exponent_scales(self.exponent, dtype).view(-1, 1, 1, 1)
        self.weight = (signs * scale.to(signs.device)).to(self.packed.device)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.refresh_weight()

    def signs(self) -> Tensor:
        """The +-1 weight pattern, ``[out, in/groups, kh, kw]``."""
        return unpack_signs(self.packed, self.weight_shape,
                            self.weight.dtype)

    def scales(self) -> Tensor:
        """Per-channel scales ``2 ** exponent`` (0 for ``-128``)."""
        return exponent_scales(self.exponent, self.weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        one = torch.ones((), dtype=x.dtype, device=x.device)
        qa = torch.where(x >= 0, one, -one)
        if self.padding_mode != 'zeros':
            pad = []
            for p in reversed(self.padding):
                pad += [p, p]
            return F.conv2d(F.pad(qa, pad, mode=self.padding_mode),
                            self.weight, self.bias, self.stride, 0,
                            self.dilation, self.groups)
        return F.conv2d(qa, self.weight, self.bias, self.stride, self.padding,
                        self.dilation, self.groups)

    def extra_repr(self) -> str:
        s = (f'{self.in_channels}, {self.out_channels}, '
             f'kernel_size={self.kernel_size}, stride={self.stride}')
        if self.padding != (0, 0):
            s += f', padding={self.padding}'
        if self.dilation != (1, 1):
            s += f', dilation={self.dilation}'
        if self.groups != 1:
            s += f', groups={self.groups}'
        if self.bias is None:
            s += ', bias=False'
        if self.padding_mode != 'zeros':
            s += f', padding_mode={self.padding_mode}'
        return s
