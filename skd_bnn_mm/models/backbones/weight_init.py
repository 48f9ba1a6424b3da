"""Named weight-init presets of the paper networks, usable in ``init_cfg``.

``dict(type='Preset', preset=NAME)`` applies one of :data:`INIT_PRESETS` to
the module it is attached to: on a backbone the conv and BN entries act, on
a head the ``Linear`` entries, so one name describes a whole network.

- ``'authors-resnet20'``: the authors' ResNet-20 code. Kaiming-normal
  (fan-in, gain sqrt 2) conv and linear *weights*; the linear bias keeps
  PyTorch's default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.
- ``'authors-vgg-small'``: the authors' VGG-Small code. Convs
  ``N(0, sqrt(2 / (k * k * out_channels)))`` (Kaiming-normal, fan-out);
  linear ``N(0, 0.01)`` with a zero bias.
- ``'kaiming-fan-in'``: Kaiming-normal (fan-in) convs and linears, zero
  bias: the plugin's init before the authors' recipes were matched (still
  the default of the ResNet-18 backbones).

BatchNorm starts at weight 1, bias 0 in all three (PyTorch's default, as in
the authors' code).
"""
import copy
import math
from typing import List

import torch.nn as nn
from mmengine.model.weight_init import BaseInit, update_init_info
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_INITIALIZERS
from mmpretrain.registry import WEIGHT_INITIALIZERS

_CONVS = ['Conv2d', 'IRConv2d']  # IRConv2d is a Conv2d; listed for clarity
_BN = dict(type='Constant', val=1, bias=0, layer=['_BatchNorm'])


def _kaiming(layers: List[str], mode: str) -> dict:
    return dict(type='Kaiming', layer=layers, mode=mode,
                nonlinearity='relu', distribution='normal')


INIT_PRESETS = {
    'authors-resnet20': [
        _kaiming(_CONVS + ['Linear'], 'fan_in'),
        dict(type='TorchDefaultBias', layer=['Linear']), _BN
    ],
    'authors-vgg-small': [
        _kaiming(_CONVS, 'fan_out'),
        dict(type='Normal', layer=['Linear'], mean=0, std=0.01, bias=0), _BN
    ],
    'kaiming-fan-in': [_kaiming(_CONVS + ['Linear'], 'fan_in'), _BN],
}


def _matches(module: nn.Module, layers: List[str]) -> bool:
    names = {cls.__name__ for cls in type(module).__mro__}
    return bool(names & set(layers))


def _register(cls, name: str):
    WEIGHT_INITIALIZERS.register_module(name=name, module=cls)
    # also in mmengine's root registry: init_cfg is built without a scope
    # in some code paths (as for IRConv2d in the MODELS registry)
    if name not in MMENGINE_INITIALIZERS.module_dict:
        MMENGINE_INITIALIZERS.register_module(name=name, module=cls)
    return cls


class TorchDefaultBiasInit(BaseInit):
    """Reset biases to PyTorch's default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    (``nn.Linear`` / ``nn.Conv2d`` ``reset_parameters``), weights untouched:
    after a ``Kaiming`` entry (which zeroes biases) it gives a weight-only
    Kaiming init.

    Args:
        layer (str | list[str]): layer types to reset.
    """

    def __call__(self, module: nn.Module) -> None:

        def init(m):
            bias = getattr(m, 'bias', None)
            weight = getattr(m, 'weight', None)
            if bias is None or weight is None or not (
                    self.wholemodule or _matches(m, self.layer)):
                return
            fan_in = nn.init._calculate_fan_in_and_fan_out(weight)[0]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(bias, -bound, bound)

        module.apply(init)
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=self._get_init_info())

    def _get_init_info(self) -> str:
        return (f'{self.__class__.__name__}: bias ~ U(-1/sqrt(fan_in), '
                '1/sqrt(fan_in))')


class PresetInit:
    """Apply the named entry of :data:`INIT_PRESETS` (mmengine init dicts,
    in order).

    Args:
        preset (str): one of :data:`INIT_PRESETS`.
    """

    def __init__(self, preset: str) -> None:
        if preset not in INIT_PRESETS:
            raise ValueError(f'Unknown init preset {preset!r}; known: '
                             f'{", ".join(sorted(INIT_PRESETS))}.')
        self.preset = preset
        self.wholemodule = False

    def __call__(self, module: nn.Module) -> None:
        for cfg in copy.deepcopy(INIT_PRESETS[self.preset]):
            func = MMENGINE_INITIALIZERS.build(cfg)
            func.wholemodule = self.wholemodule
            func(module)

    def _get_init_info(self) -> str:
        return f'{self.__class__.__name__}: {self.preset}'


_register(TorchDefaultBiasInit, 'TorchDefaultBias')
_register(PresetInit, 'Preset')
