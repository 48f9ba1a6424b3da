"""Batched crop-and-flip on the training device, then mmpretrain's
normalisation."""
from numbers import Number
from typing import List, Sequence, Tuple, Union

import torch
from mmpretrain.models.utils import ClsDataPreprocessor
from mmpretrain.registry import MODELS


def _border_index(idx: torch.Tensor, size: int,
                  mode: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Source index of every output index for a border ``mode`` (the
    conventions of ``mmcv.impad``/``numpy.pad``), and where it is inside."""
    inside = (idx >= 0) & (idx < size)
    if mode in ('constant', 'edge'):
        return idx.clamp(0, size - 1), inside
    if mode == 'reflect':  # d c b | a b c d | c b a
        if size == 1:
            return torch.zeros_like(idx), inside
        period = 2 * (size - 1)
        m = idx.remainder(period)
        return torch.where(m < size, m, period - m), inside
    if mode == 'symmetric':  # c b a | a b c d | d c b
        period = 2 * size
        m = idx.remainder(period)
        return torch.where(m < size, m, period - 1 - m), inside
    raise ValueError(f'Unknown padding_mode {mode!r}; use constant, edge, '
                     f'reflect or symmetric')


def crop_flip_batch(inputs: torch.Tensor,
                    top: torch.Tensor,
                    left: torch.Tensor,
                    flip: torch.Tensor,
                    size: Tuple[int, int],
                    padding_mode: str = 'constant',
                    pad_val: Union[Number, Sequence[Number]] = 0
                    ) -> torch.Tensor:
    """Crop ``size`` windows at ``(top, left)`` out of ``inputs``
    (``[N, C, H, W]``), reading beyond the border as ``padding_mode`` pads,
    and mirror the windows where ``flip``: one gather, any dtype.

    ``top``/``left`` are ``[N]`` integer tensors (negative: the window starts
    in the padding), ``flip`` an ``[N]`` bool tensor, all on the device of
    ``inputs``. Pixel values are copied, never computed, so the result equals
    padding and cropping image by image.
    """
    n, c, h, w = inputs.shape
    dev = inputs.device
    rows = top.view(n, 1) + torch.arange(size[0], device=dev)
    cols = left.view(n, 1) + torch.arange(size[1], device=dev)
    cols = torch.where(flip.view(n, 1), cols.flip(1), cols)
    rows, rows_in = _border_index(rows, h, padding_mode)
    cols, cols_in = _border_index(cols, w, padding_mode)
    out = inputs[torch.arange(n, device=dev).view(n, 1, 1, 1),
                 torch.arange(c, device=dev).view(1, c, 1, 1),
                 rows.view(n, 1, -1, 1),
                 cols.view(n, 1, 1, -1)]
    if padding_mode == 'constant':
        inside = rows_in.view(n, 1, -1, 1) & cols_in.view(n, 1, 1, -1)
        out = torch.where(inside, out, _fill(pad_val, inputs.dtype, c, dev))
    return out


def _fill(pad_val, dtype: torch.dtype, channels: int,
          device: torch.device) -> torch.Tensor:
    """``pad_val`` as a tensor of ``dtype``: one value, or ``[1, C, 1, 1]``
    for one value per channel; rounded (not truncated) for integer types."""
    fill = torch.as_tensor(pad_val, dtype=torch.float64)
    if fill.dim() > 1 or fill.dim() == 1 and fill.numel() not in (1,
                                                                  channels):
        raise ValueError(
            f'pad_val {pad_val!r} must be one number or {channels} (one per '
            f'channel of the images)')
    if not dtype.is_floating_point:
        fill = fill.round()
        info = torch.iinfo(dtype)
        if fill.min() < info.min or fill.max() > info.max:
            raise ValueError(f'pad_val {pad_val!r} does not fit {dtype} '
                             f'images ({info.min}..{info.max})')
    fill = fill.to(dtype)
    if fill.dim() == 1:
        fill = fill.view(1, -1, 1, 1)
    return _to_device(fill, device)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small host tensor to ``device``; to CUDA from pinned memory
    without making the host wait for the device."""
    if device.type == 'cuda':
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@MODELS.register_module()
class CropFlipClsDataPreprocessor(ClsDataPreprocessor):
    """:class:`ClsDataPreprocessor` that first applies the crops and flips
    drawn by the ``DeferredCropFlip`` transform, batched on its device.

    Samples without a ``crop_flip`` field (e.g. validation) pass unchanged;
    a batch that mixes both is an error. The crop runs before the uint8 ->
    float conversion and the normalisation, so constant padding fills raw
    pixel values, as padding in the pipeline would. All other arguments are
    :class:`ClsDataPreprocessor`'s.
    """

    def forward(self, data: dict, training: bool = False) -> dict:
        return super().forward(self._apply_crop_flip(data), training)

    # Eager under torch.compile: the draws are Python values that change
    # every batch, and a traced step would guard on them and recompile.
    @torch.compiler.disable
    def _apply_crop_flip(self, data: dict) -> dict:
        samples = data.get('data_samples', None) or []
        params = [s.get('crop_flip', None) for s in samples]
        if not params or all(p is None for p in params):
            return data
        if any(p is None for p in params):
            raise ValueError(
                f'{type(self).__name__}: some samples of the batch carry '
                f'`crop_flip` and others do not; put DeferredCropFlip in the '
                f'pipeline of every sample or of none')
        data = dict(data)
        data['inputs'] = self._crop_flip(self.cast_data(data['inputs']),
                                         params)
        return data

    def _crop_flip(self, inputs: Union[torch.Tensor, List[torch.Tensor]],
                   params: List[dict]) -> torch.Tensor:
        first = params[0]
        keys = ('size', 'padding_mode', 'pad_val')
        for p in params:
            if any(p[k] != first[k] for k in keys):
                raise ValueError(
                    f'{type(self).__name__}: the samples of a batch must '
                    f'share one crop size, padding_mode and pad_val, got '
                    f'{ {k: first[k] for k in keys} } and '
                    f'{ {k: p[k] for k in keys} }; give every dataset of '
                    f'the loader the same DeferredCropFlip settings')
        if isinstance(inputs, (list, tuple)):
            if len({tuple(x.shape) for x in inputs}) != 1:
                return torch.stack([
                    self._crop_flip(x[None], [p])[0]
                    for x, p in zip(inputs, params)
                ])
            inputs = torch.stack(list(inputs))
        if inputs.dim() != 4 or inputs.shape[0] != len(params):
            raise ValueError(
                f'{type(self).__name__}: expected {len(params)} images '
                f'[C, H, W], got inputs of shape {tuple(inputs.shape)}')
        for p in params:
            source = p.get('source', None)
            if source is not None and tuple(source) != tuple(
                    inputs.shape[-2:]):
                raise ValueError(
                    f'{type(self).__name__}: the crop was drawn for a '
                    f'{tuple(source)} image but the image is '
                    f'{tuple(inputs.shape[-2:])}: DeferredCropFlip must be '
                    f'the last transform that changes the image size '
                    f'before PackInputs')
        table = _to_device(
            torch.tensor([[p['top'], p['left'], int(p['flip'])]
                          for p in params]), inputs.device)
        return crop_flip_batch(inputs, table[:, 0], table[:, 1],
                               table[:, 2].bool(), tuple(first['size']),
                               first['padding_mode'], first['pad_val'])
