"""bfloat16 autocast for training on any device, without loss scaling."""
from contextlib import contextmanager
from typing import Optional, Union

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmpretrain.registry import OPTIM_WRAPPERS

_DTYPES = {'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16}


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(OptimWrapper):
    """:class:`OptimWrapper` that runs the forward pass under bf16 autocast.

    mmengine's ``AmpOptimWrapper`` refuses to run without an accelerator, so
    mixed precision could not be tried (or tested) on a CPU. bfloat16 has
    the exponent range of float32, so it needs no loss scaling; this wrapper
    only opens ``torch.autocast(device_type, bfloat16)`` around the data
    preprocessor and the forward pass (mmengine's ``optim_context``), on the
    device of the model's parameters. Parameters, gradients and optimizer
    state stay float32. For float16 use ``AmpOptimWrapper`` (CUDA, dynamic
    loss scaling).

    In the binary convs the inputs of the convolution are exactly +-1 and
    +-2^k, which bf16 holds exactly; with float32 accumulation (CPU oneDNN:
    tested; CUDA: not measured here) each binary conv output is the float32
    result rounded once to bf16. Full-precision layers, the teacher's real
    conv and the losses see ordinary bf16 rounding, so training is close to,
    not identical with, float32 training.

    Args:
        dtype (str | torch.dtype): only ``'bfloat16'``.
        device_type (str, optional): autocast device; ``None`` takes the
            device type of the model's first parameter at each step.
        **kwargs: the arguments of :class:`OptimWrapper`.
    """

    def __init__(self, *args, dtype: Union[str, torch.dtype] = 'bfloat16',
                 device_type: Optional[str] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if dtype is not torch.bfloat16 and dtype not in _DTYPES:
            raise ValueError(
                f'AutocastOptimWrapper supports dtype="bfloat16" only, got '
                f'{dtype!r}; float16 needs loss scaling: use '
                'optim_wrapper=dict(type="AmpOptimWrapper", dtype="float16") '
                'on CUDA.')
        self.cast_dtype = torch.bfloat16
        self.device_type = device_type

    @staticmethod
    def _device_type(model: nn.Module) -> str:
        for tensor in model.parameters():
            return tensor.device.type
        return 'cpu'

    @contextmanager
    def optim_context(self, model: nn.Module):
        device_type = self.device_type or self._device_type(model)
        with super().optim_context(model), \
                torch.autocast(device_type=device_type, dtype=self.cast_dtype):
            yield
