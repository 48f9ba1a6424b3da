"""Swap activations that lose the sign of their input for a signed one.

A binary conv keeps only ``sign(x)`` of its input, with ``sign(0) = +1``.
An activation that is 0 on part of the negative axis (``ReLU``, ``ReLU6``,
``Hardswish`` for x <= -3, ``HardMish`` for x <= -2, a clamp at 0) hands it
inputs that binarise to +1 where the pre-activation was negative; after
``ReLU``/``ReLU6`` every input is +1 and the conv sees a constant. Binary
networks put ``Hardtanh`` there instead.

Which activations are replaced is decided on what they compute, not on a
list of names: every elementwise activation module of PyTorch
(``torch.nn.modules.activation``), timm (``timm.layers.activations*``), mmcv
(``mmcv.cnn.bricks``) and this package is evaluated on probe values
+-1e-3 ... +-4 (the range of BatchNorm outputs that matters); if a negative
value maps to >= 0, or a positive one to < 0, it loses signs and is
replaced.
Left as they are, and reported with the reason:

- signed activations (``Hardtanh``, ``Tanh``, ``LeakyReLU``, ``PReLU``,
  ``ELU``, ``SiLU``/``Swish``, ``GELU``, ``Mish``, ...): ``sign(f(x))`` equals
  ``sign(x)``, the binary conv gets all the information it can use;
- sigmoid-type gates (``Sigmoid``, ``Hardsigmoid``, mmcv's ``HSigmoid``,
  ...): non-negative, but they scale features (squeeze-excitation) rather
  than feed a conv;
- anything matched by ``exclude``.

Functional activations (``F.relu`` inside a ``forward``) are not modules and
cannot be swapped; :mod:`.binary_input_check` finds them at run time.
"""
import inspect
from collections import Counter
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmpretrain.registry import MODELS

from .module_swap import swap_modules

#: modules whose classes are elementwise activations
ACTIVATION_MODULES = (
    'torch.nn.modules.activation',
    'timm.layers.activations',  # also activations_me, activations_jit
    'mmcv.cnn.bricks.activation',
    'mmcv.cnn.bricks.hswish',
    'mmcv.cnn.bricks.hsigmoid',
    'mmcv.cnn.bricks.swish',
    'skd_bnn_mm.models.layers.clamp',
)
# in those modules but not elementwise, or with learned per-channel slopes
# that a probe cannot evaluate (PReLU is signed for positive slopes)
_NOT_ELEMENTWISE = ('Softmax', 'Softmin', 'LogSoftmax', 'Softmax2d', 'GLU',
                    'MultiheadAttention')
_SIGNED_BY_TYPE = ('PReLU', )

# -4 ... -1e-3: Hardswish is 0 below -3, HardMish below -2; further out even
# GELU's tanh form rounds to 0 in float32, which no BN output reaches
_PROBE = -torch.logspace(0.6020600, -3, 37)

REPLACED = 'loses the sign of negative inputs'
SIGNED = 'keeps the sign of its input'
GATE = 'non-negative gate (sigmoid type), scales features'
EXCLUDED = 'matched by exclude'


@dataclass
class ActivationReport:
    """What :func:`replace_activations` did.

    Attributes:
        replaced: module name -> ``'ReLU6 -> Hardtanh'``.
        left: module name -> why it was kept (one of ``SIGNED``, ``GATE``,
            ``EXCLUDED``).
    """
    replaced: Dict[str, str] = field(default_factory=dict)
    left: Dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: how many of each type were replaced and left, and
        why."""

        def counts(values):
            c = Counter(values)
            return ', '.join(f'{v} x{k}' for v, k in sorted(c.items()))

        text = f'replaced {len(self.replaced)}'
        if self.replaced:
            text += f' ({counts(self.replaced.values())})'
        text += f'; left {len(self.left)}'
        if self.left:
            text += f' ({counts(self.left.values())})'
        return text


def is_activation(module: nn.Module) -> bool:
    """Whether ``module`` is an elementwise activation this file knows
    (one unit, even with children: mmcv's ``HSwish`` holds a ``ReLU6``)."""
    cls = type(module)
    return (cls.__module__.startswith(ACTIVATION_MODULES)
            and cls.__name__ not in _NOT_ELEMENTWISE)


def _activations(model: nn.Module):
    """``(name, module)`` of the activations, not those inside another."""
    inside = ()
    for name, m in model.named_modules():
        if inside and name.startswith(inside):
            continue
        if is_activation(m):
            inside = tuple(list(inside) + [name + '.'])
            yield name, m


def classify_activation(module: nn.Module) -> str:
    """``REPLACED``, ``SIGNED`` or ``GATE`` for an activation module."""
    name = type(module).__name__
    if 'sigmoid' in name.lower() and not name.startswith('Log'):
        return GATE
    if name in _SIGNED_BY_TYPE:
        return SIGNED
    was_training = module.training
    module.eval()  # RReLU: the mean slope, not a random one
    try:
        with torch.no_grad():
            neg = module(_PROBE.clone())
            pos = module(-_PROBE)
    finally:
        module.train(was_training)
    lost = bool((neg >= 0).any()) or bool((pos < 0).any())
    return REPLACED if lost else SIGNED


def _build_replacement(act_cfg: dict, old: nn.Module) -> nn.Module:
    cfg = dict(act_cfg)
    cls = cfg['type'] if isinstance(cfg['type'], type) else MODELS.get(
        cfg['type'])
    if cls is None:
        raise KeyError(f'activation type {cfg["type"]!r} is not registered; '
                       "use e.g. act_cfg=dict(type='Hardtanh')")
    if ('inplace' not in cfg and hasattr(old, 'inplace')
            and 'inplace' in inspect.signature(cls).parameters):
        # an in-place ReLU stays in place: nothing else reads its input
        cfg['inplace'] = bool(old.inplace)
    cfg['type'] = cls
    return MODELS.build(cfg)


def replace_activations(model: nn.Module,
                        act_cfg: Optional[dict] = None,
                        exclude: Optional[Sequence[str]] = None,
                        log: bool = True) -> ActivationReport:
    """Replace, in place, the activations that lose the sign of negative
    inputs by ``act_cfg`` (default ``dict(type='Hardtanh')``, i.e. clip to
    [-1, 1]).

    Args:
        model: any ``nn.Module``; a module held under several names (e.g.
            mmpretrain's ``BasicBlock.relu``, called twice) is replaced
            everywhere by one new module.
        act_cfg: config of the replacement, built with mmpretrain's MODELS;
            ``inplace`` is copied from the replaced module when the new type
            takes it and the config does not say.
        exclude: fnmatch patterns on module names of activations to keep.
        log: log :meth:`ActivationReport.summary` and the names kept.

    Returns:
        ActivationReport: names replaced and names left, with reasons.
    """
    act_cfg = dict(type='Hardtanh') if act_cfg is None else dict(act_cfg)
    if 'type' not in act_cfg:
        raise KeyError("act_cfg must contain 'type', e.g. "
                       "dict(type='Hardtanh')")
    exclude = [exclude] if isinstance(exclude, str) else list(exclude or [])
    report = ActivationReport()
    picked = set()
    for name, m in _activations(model):
        kind = type(m).__name__
        if any(fnmatchcase(name, p) for p in exclude):
            report.left[name] = f'{kind}: {EXCLUDED}'
            continue
        verdict = classify_activation(m)
        if verdict != REPLACED:
            report.left[name] = f'{kind}: {verdict}'
            continue
        picked.add(id(m))

    def make(name: str, old: nn.Module) -> nn.Module:
        new = _build_replacement(act_cfg, old)
        report.replaced[name] = f'{type(old).__name__} -> {type(new).__name__}'
        return new

    swap_modules(model, lambda name, m: id(m) in picked, make)
    if log:
        msg = f'replace_activations(): {report.summary()}'
        if report.left:
            msg += '; left: ' + ', '.join(report.left)
        print_log(msg, logger='current')
    return report


def sign_losing_activations(model: nn.Module) -> List[str]:
    """Names of the activation modules :func:`replace_activations` would
    replace (nothing is changed)."""
    return [n for n, m in _activations(model)
            if classify_activation(m) == REPLACED]
