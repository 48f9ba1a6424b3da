"""Autocast (bf16 or fp16 with dynamic loss scaling) on any device."""
import logging
from contextlib import contextmanager
from typing import Optional, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmpretrain.registry import OPTIM_WRAPPERS

_DTYPES = {'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16,
           'float16': torch.float16, 'fp16': torch.float16,
           'half': torch.float16}


def _cast_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(
        f'AutocastOptimWrapper supports dtype="bfloat16" or "float16", got '
        f'{dtype!r}.')


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(OptimWrapper):
    """:class:`OptimWrapper` with bf16 or fp16 autocast on any device.

    mmengine's ``AmpOptimWrapper`` refuses to run without an accelerator, so
    mixed precision could not be tried (or tested) on a CPU. This wrapper
    opens ``torch.autocast(device_type, dtype)`` around the data
    preprocessor and the forward pass (mmengine's ``optim_context``), on the
    device of the model's parameters. Parameters, gradients and optimizer
    state stay float32.

    - ``dtype='bfloat16'``: bf16 has the exponent range of float32, so no
      loss scaling (unless ``loss_scale`` asks for it).
    - ``dtype='float16'``: dynamic loss scaling with
      ``torch.amp.GradScaler(device)``, with the semantics of
      ``AmpOptimWrapper`` on CUDA: ``loss_scale='dynamic'`` (initial scale
      2^16, doubled after 2000 steps without overflow, halved and the step
      skipped on an inf/NaN gradient), a float (static scale) or a dict of
      ``GradScaler`` arguments; gradient clipping unscales first; the
      scaler's state is saved in ``state_dict()['loss_scaler']`` and
      restored by :meth:`load_state_dict`, so checkpoints of both wrappers
      resume each other's scale.

    A skipped step is logged (warning with the scale before and after);
    the message hub gets ``train/amp_scale`` (scale after the step) and
    ``train/amp_skipped_steps`` (skipped steps of this wrapper since it was
    built) at every step, which mmengine's logger prints.

    In the binary convs the inputs of the convolution are exactly +-1 and
    +-2^k, which bf16 and fp16 hold exactly; with float32 accumulation each
    binary conv output is the float32 result rounded once (in fp16 exact
    while ``|sum| <= 2048 * 2^k``). Full-precision layers, the teacher's
    real conv and the losses' inputs see ordinary rounding, so training is
    close to, not identical with, float32 training (docs/speed.md).

    Args:
        dtype (str | torch.dtype): ``'bfloat16'`` (default) or
            ``'float16'``.
        loss_scale (str | float | dict, optional): as ``AmpOptimWrapper``'s;
            ``None``: ``'dynamic'`` for float16, none for bfloat16.
        device_type (str, optional): autocast device; ``None`` takes the
            device type of the model's first parameter at each step. The
            scaler is built for ``device_type`` or else the device of the
            optimizer's first parameter.
        **kwargs: the arguments of :class:`OptimWrapper`.
    """

    def __init__(self, *args, dtype: Union[str, torch.dtype] = 'bfloat16',
                 loss_scale: Union[None, str, float, dict] = None,
                 device_type: Optional[str] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cast_dtype = _cast_dtype(dtype)
        self.device_type = device_type
        if loss_scale is None and self.cast_dtype is torch.float16:
            loss_scale = 'dynamic'
        self._scale_update_param = None
        self.loss_scaler = None
        self.skipped_steps = 0
        self._optimizer_steps = 0
        if loss_scale is not None:
            self.loss_scaler = self._build_scaler(loss_scale)
            # runs only when GradScaler lets the optimizer step
            self.optimizer.register_step_post_hook(self._count_step)

    def _build_scaler(self, loss_scale) -> torch.amp.GradScaler:
        device = self.device_type or self._optimizer_device()
        if loss_scale == 'dynamic':
            return torch.amp.GradScaler(device)
        if isinstance(loss_scale, (int, float)) and not isinstance(
                loss_scale, bool):
            self._scale_update_param = float(loss_scale)
            return torch.amp.GradScaler(device, init_scale=float(loss_scale))
        if isinstance(loss_scale, dict):
            return torch.amp.GradScaler(device, **loss_scale)
        raise TypeError('loss_scale must be "dynamic", a float or a dict of '
                        f'GradScaler arguments, got {loss_scale!r}')

    def _optimizer_device(self) -> str:
        for group in self.optimizer.param_groups:
            for param in group['params']:
                return param.device.type
        return 'cpu'

    def _count_step(self, optimizer, args, kwargs) -> None:
        self._optimizer_steps += 1

    @staticmethod
    def _device_type(model: nn.Module) -> str:
        for tensor in model.parameters():
            return tensor.device.type
        return 'cpu'

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        if self.loss_scaler is None:
            return super().backward(loss, **kwargs)
        self.loss_scaler.scale(loss).backward(**kwargs)
        self._inner_count += 1

    def step(self, **kwargs) -> None:
        if self.loss_scaler is None:
            return super().step(**kwargs)
        if self.clip_grad_kwargs:
            self.loss_scaler.unscale_(self.optimizer)
            self._clip_grad()
        # GradScaler.step reads its inf check on the host anyway
        before = self.loss_scaler.get_scale()
        steps = self._optimizer_steps
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update(self._scale_update_param)
        after = self.loss_scaler.get_scale()
        if self._optimizer_steps == steps:
            self.skipped_steps += 1
            print_log(
                f'{self.cast_dtype} gradients overflowed (inf/NaN): optimizer '
                f'step skipped, loss scale {before:g} -> {after:g} '
                f'({self.skipped_steps} skipped so far).', logger='current',
                level=logging.WARNING)
        # the hub OptimWrapper logs grad_norm to (the runner's)
        self.message_hub.update_scalar('train/amp_scale', after)
        self.message_hub.update_scalar('train/amp_skipped_steps',
                                       self.skipped_steps)

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.loss_scaler is not None:
            state['loss_scaler'] = self.loss_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        scaler_state = state_dict.pop('loss_scaler', None)
        if scaler_state is not None and self.loss_scaler is not None:
            self.loss_scaler.load_state_dict(scaler_state)
        super().load_state_dict(state_dict)

    @contextmanager
    def optim_context(self, model: nn.Module):
        device_type = self.device_type or self._device_type(model)
        with super().optim_context(model), \
                torch.autocast(device_type=device_type, dtype=self.cast_dtype):
            yield
