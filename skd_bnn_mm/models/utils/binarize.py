"""Swap the convolutions of any model for binary ones, and back.

A model built elsewhere (timm, torchvision, mmpretrain without ``conv_cfg``)
becomes a binary network with one call::

    report = binarize(model)             # every nn.Conv2d but the first
    report = binarize(model, exclude=['*downsample*'])
    unbinarize(model)                    # back to full precision

Rules:

- Only modules whose type is exactly :class:`torch.nn.Conv2d` are converted.
  Subclasses with their own ``forward`` (timm's ``Conv2dSame`` pads
  dynamically, ``StdConv2d``/``ScaledStdConv2d`` standardise or rescale the
  weight) would lose that behaviour silently, so they are left full
  precision, listed in ``report.skipped`` and warned about. Binary convs
  already present are left as they are. Linear layers are never touched.
- The converted conv reuses the original ``weight``/``bias`` Parameters (same
  tensors, so an optimizer built before the swap keeps working) and keeps
  stride, padding, dilation, groups and padding_mode. Forward hooks registered
  on the old module are not carried over.
- ``keep_first``: the first conv stays full precision (binarising the 3-channel
  image input throws away most of it). "First" is the first conv to run in a
  dry forward pass when ``example_input`` is given, otherwise the first in
  registration order (``named_modules()``), which is the same for usual
  backbones.
- ``include`` / ``exclude`` are shell-style :mod:`fnmatch` patterns matched
  (case-sensitively) against full module names as given by
  ``named_modules()``, e.g. ``'layer1.*'``, ``'*.conv2'``. Each pattern must
  match at least one conv, otherwise a ValueError lists the conv names (a
  typo should not silently binarise everything).
- ``replace_activations=True`` also swaps the activations that lose the sign
  of negative inputs (``ReLU``, ``ReLU6``, ``Hardswish``, ...) for
  ``Hardtanh`` (see :mod:`.signed_activations`); without it a warning lists
  them, because a binary conv after a ``ReLU`` only ever sees +1.
"""
import copy
import warnings
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_conv_layer
from mmengine.registry import MODELS as ROOT_MODELS

from ..layers import IRConv2d
from .module_swap import swap_modules
from .signed_activations import (ActivationReport, replace_activations,
                                 sign_losing_activations)


@dataclass
class BinarizeReport:
    """What :func:`binarize` / :func:`unbinarize` did.

    Attributes:
        model: the converted model (the input itself when ``inplace``).
        converted: names of the convs that were swapped.
        first_conv: name of the conv kept full precision by ``keep_first``.
        skipped: name -> reason for convs left untouched on purpose.
        activations: what ``replace_activations`` replaced and left
            (``None`` when it was not asked for).
    """
    model: nn.Module
    converted: List[str] = field(default_factory=list)
    first_conv: Optional[str] = None
    skipped: Dict[str, str] = field(default_factory=dict)
    activations: Optional[ActivationReport] = None


def binary_conv_names(model: nn.Module) -> List[str]:
    """Names of the :class:`IRConv2d` modules, in registration order."""
    return [n for n, m in model.named_modules() if isinstance(m, IRConv2d)]


def _conv_class(conv_cfg: dict):
    layer_type = conv_cfg['type']
    if isinstance(layer_type, type):
        return layer_type
    with ROOT_MODELS.switch_scope_and_registry(None) as registry:
        cls = registry.get(layer_type)
    if cls is None:
        raise KeyError(f'conv type {layer_type!r} is not registered; use '
                       f"e.g. dict(type='IRConv2d')")
    return cls


def _check_patterns(kind: str, patterns: Optional[Sequence[str]],
                    names: List[str]) -> List[str]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    for pat in patterns:
        if not any(fnmatchcase(n, pat) for n in names):
            raise ValueError(
                f'{kind} pattern {pat!r} matches no Conv2d module. Patterns '
                f'are fnmatch patterns on full module names; conv names: '
                f'{", ".join(names)}')
    return list(patterns)


def _run_example(model: nn.Module, example_input: Any) -> None:
    if isinstance(example_input, dict):
        model(**example_input)
    elif isinstance(example_input, (tuple, list)):
        model(*example_input)
    else:
        model(example_input)


def _first_executed_conv(model: nn.Module, convs: Dict[str, nn.Module],
                         example_input: Any) -> Optional[str]:
    """Name of the first conv to run in a dry forward (eval, no grad)."""
    order: List[str] = []
    handles = []
    for name, conv in convs.items():
        handles.append(conv.register_forward_hook(
            lambda mod, args, out, name=name: order.append(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            _run_example(model, example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return order[0] if order else None


def _to_binary(conv: nn.Conv2d, conv_cfg: dict) -> nn.Module:
    new = build_conv_layer(
        conv_cfg, conv.in_channels, conv.out_channels, conv.kernel_size,
        stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
        groups=conv.groups, bias=conv.bias is not None,
        padding_mode=conv.padding_mode)
    new.weight = conv.weight
    if conv.bias is not None:
        new.bias = conv.bias
    new.to(device=conv.weight.device)
    return new


def binarize(model: nn.Module,
             conv_cfg: Optional[dict] = None,
             keep_first: bool = True,
             include: Optional[Sequence[str]] = None,
             exclude: Optional[Sequence[str]] = None,
             inplace: bool = True,
             example_input: Any = None,
             replace_activations: bool = False,
             act_cfg: Optional[dict] = None,
             act_exclude: Optional[Sequence[str]] = None) -> BinarizeReport:
    """Replace the model's ``nn.Conv2d`` layers by binary convs.

    Args:
        model: any ``nn.Module``.
        conv_cfg: config of the binary conv, built with mmcv's
            ``build_conv_layer``. Defaults to ``dict(type='IRConv2d')``;
            extra keys are passed on (e.g. ``sign='ste'``).
        keep_first: keep the first conv full precision.
        include: fnmatch patterns; when given only matching convs convert.
        exclude: fnmatch patterns of convs to keep full precision.
        inplace: modify ``model``; otherwise work on a deep copy, returned
            as ``report.model``.
        example_input: optional input (tensor, tuple of args or dict of
            kwargs) for a dry forward pass that finds the first conv in
            execution order.
        replace_activations: also replace the activations that lose the
            sign of negative inputs by ``act_cfg`` (default
            ``dict(type='Hardtanh')``); reported in ``report.activations``.
        act_cfg: the replacement activation's config.
        act_exclude: fnmatch patterns of activations to keep.

    Returns:
        BinarizeReport: the model and the names converted / kept.
    """
    conv_cfg = dict(type='IRConv2d') if conv_cfg is None else dict(conv_cfg)
    if 'type' not in conv_cfg:
        raise KeyError('conv_cfg must contain "type", e.g. '
                       "dict(type='IRConv2d')")
    binary_types: Tuple[type, ...] = (IRConv2d, _conv_class(conv_cfg))
    if not inplace:
        model = copy.deepcopy(model)
    report = BinarizeReport(model=model)

    all_convs = {n: m for n, m in model.named_modules()
                 if isinstance(m, nn.Conv2d)}
    if not all_convs:
        raise ValueError(
            f'binarize(): {type(model).__name__} has no nn.Conv2d module to '
            'binarise (only nn.Conv2d layers are converted; linear layers '
            'stay full precision). Pass the model that holds the '
            'convolutions, e.g. the backbone, or drop the conversion for a '
            'model without any.')
    names = list(all_convs)
    include = _check_patterns('include', include, names)
    exclude = _check_patterns('exclude', exclude, names)

    if keep_first:
        if example_input is not None:
            report.first_conv = _first_executed_conv(model, all_convs,
                                                     example_input)
        else:
            report.first_conv = names[0]

    def wanted(name: str, conv: nn.Module) -> bool:
        if not isinstance(conv, nn.Conv2d) or isinstance(conv, binary_types):
            return False
        if name == report.first_conv:
            report.skipped[name] = 'first conv (keep_first=True)'
        elif include and not any(fnmatchcase(name, p) for p in include):
            report.skipped[name] = 'not matched by include'
        elif any(fnmatchcase(name, p) for p in exclude):
            report.skipped[name] = 'matched by exclude'
        elif type(conv) is not nn.Conv2d:
            report.skipped[name] = (
                f'{type(conv).__name__} is a Conv2d subclass with its own '
                f'forward')
        else:
            return True
        return False

    swap = swap_modules(model, wanted,
                        lambda name, conv: _to_binary(conv, conv_cfg))
    report.converted = list(swap.swapped)

    subclassed = [f'{n} ({type(all_convs[n]).__name__})'
                  for n, r in report.skipped.items() if 'subclass' in r]
    if subclassed:
        warnings.warn('binarize(): left full precision because their type is '
                      'a Conv2d subclass with its own forward (use '
                      f'exclude/include to silence): {", ".join(subclassed)}')
    if not report.converted:
        warnings.warn('binarize(): no conv was converted')
    report.model = swap.model
    if replace_activations:
        report.activations = _replace_acts(report.model, act_cfg,
                                           exclude=act_exclude)
    elif report.converted:
        _warn_sign_losing(report.model, 'binarize()',
                          'replace_activations=True')
    return report


# the function of the same name is shadowed by binarize()'s argument
_replace_acts = replace_activations


def _warn_sign_losing(model: nn.Module, who: str, option: str) -> None:
    names = sign_losing_activations(model)
    if names:
        kinds = sorted({type(model.get_submodule(n)).__name__ for n in names})
        warnings.warn(
            f'{who}: {len(names)} activation modules ({", ".join(kinds)}) '
            'are 0 on (part of) the negative axis; a binary conv after them '
            f'binarises those inputs to +1. Pass {option} to replace them by '
            'Hardtanh, or '
            f'ignore this if no binary conv follows them: '
            f'{", ".join(names)}')


def unbinarize(model: nn.Module, inplace: bool = True) -> BinarizeReport:
    """Turn every :class:`IRConv2d` back into an ``nn.Conv2d`` that shares
    its weight/bias Parameters (the latent real weights)."""
    if not inplace:
        model = copy.deepcopy(model)
    report = BinarizeReport(model=model)
    swap = swap_modules(model, lambda name, m: isinstance(m, IRConv2d),
                        lambda name, conv: _to_full_precision(conv))
    report.model = swap.model
    report.converted = list(swap.swapped)
    return report


def _to_full_precision(conv: nn.Module) -> nn.Conv2d:
    new = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size,
        stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
        groups=conv.groups, bias=conv.bias is not None,
        padding_mode=conv.padding_mode, device='meta')
    new.weight = conv.weight
    if conv.bias is not None:
        new.bias = conv.bias
    return new


def relu_to_hardtanh(model: nn.Module) -> List[str]:
    """Deprecated: use :func:`replace_activations`, which this calls (it
    replaces ``ReLU6``, ``Hardswish``, ... too). Returns the names
    replaced."""
    warnings.warn('relu_to_hardtanh() is deprecated; use '
                  'skd_bnn_mm.models.utils.replace_activations(model), which '
                  'returns a report of what it replaced and left',
                  DeprecationWarning, stacklevel=2)
    return list(_replace_acts(model).replaced)
