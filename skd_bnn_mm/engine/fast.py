"""Opt-in speed switches for training: memory format and compile.

They change the rounding of the full-precision parts (a binary network
amplifies rounding: a pre-activation that moves across 0 flips a sign, and
the flips spread through later layers), so none is on by default;
docs/speed.md has the measurements.

- :func:`to_channels_last`: NHWC tensors for the convs. Binary convs stay
  exact (their products are +-2^k, so any summation order gives the same
  float32 sum); the full-precision stem, the teacher's real conv and the
  BatchNorms round differently. Applied by
  :class:`~skd_bnn_mm.engine.hooks.FastPathHook`.
- :func:`compile_train_step`: ``torch.compile`` of ``train_step``, as
  mmengine does for ``compile=True``; :func:`keep_optimizer_step_uncompiled`
  keeps the optimizer step out of the graph (``SafeRunner`` applies it).

Autocast is an optim wrapper type, chosen in one place:
:mod:`skd_bnn_mm.engine.optim.amp`.
"""
import shutil
from typing import Optional

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

# the AMP choice lives in one place; re-exported for existing imports
from .optim.amp import AMP_CHOICES, amp_optim_wrapper_cfg  # noqa: F401

#: attribute set on a model converted by :func:`to_channels_last`
_MARK = '_skd_channels_last_handle'


def _input_to_channels_last(module, args, kwargs):
    """Forward pre-hook: the first 4-D tensor argument in NHWC layout."""
    if args and torch.is_tensor(args[0]) and args[0].dim() == 4:
        args = (args[0].contiguous(memory_format=torch.channels_last),
                *args[1:])
    elif torch.is_tensor(kwargs.get('inputs')) and kwargs['inputs'].dim() == 4:
        kwargs = dict(kwargs, inputs=kwargs['inputs'].contiguous(
            memory_format=torch.channels_last))
    return args, kwargs


def to_channels_last(model: nn.Module) -> RemovableHandle:
    """Put 4-D parameters/buffers and the backbone input in channels-last.

    Parameters are converted in place (the same ``Parameter`` objects, so an
    optimizer built before keeps working). A forward pre-hook on
    ``model.backbone`` (or on ``model`` when it has no backbone) converts the
    image batch. Calling it again on the same model does nothing more.

    Convert before a ``DistributedDataParallel`` wrapper is built: DDP lays
    out its gradient buckets from the parameters' strides at construction.

    Returns:
        The handle of the input hook (``handle.remove()`` stops converting
        inputs; the parameters keep their layout).
    """
    handle = model.__dict__.get(_MARK)
    if handle is not None:
        return handle
    model.to(memory_format=torch.channels_last)
    target = getattr(model, 'backbone', None)
    if not isinstance(target, nn.Module):
        target = model
    handle = target.register_forward_pre_hook(_input_to_channels_last,
                                              with_kwargs=True)
    model.__dict__[_MARK] = handle
    return handle


def compile_train_step(model: nn.Module,
                       compile_cfg: Optional[dict] = None) -> nn.Module:
    """Replace ``model.train_step`` by its ``torch.compile`` d version.

    The same thing mmengine's Runner does for ``compile=True`` (or a dict of
    ``torch.compile`` options) in a config. The SKD-BNN loss (both passes
    and all losses) is one graph, traced at the first step and reused (the
    second step compiles the optimizer's momentum state); docs/speed.md has
    the speed-up and why nothing on a module may change per step. Fused
    kernels round differently.
    """
    if not callable(getattr(torch, 'compile', None)):
        raise RuntimeError('torch.compile needs PyTorch >= 2.0; drop '
                           '--compile / compile=True.')
    compile_cfg = dict(compile_cfg or {})
    device = next(model.parameters()).device.type
    backend = compile_cfg.get('backend', 'inductor')
    has_cxx = any(shutil.which(c) for c in ('g++', 'c++', 'clang++'))
    if device == 'cpu' and backend == 'inductor' and not has_cxx:
        raise RuntimeError('torch.compile on CPU needs a C++ compiler '
                           '(g++ or clang++) on PATH; install one or drop '
                           '--compile.')
    model.train_step = torch.compile(model.train_step, **compile_cfg)
    return model


def keep_optimizer_step_uncompiled(optim_wrapper) -> None:
    """Run the optimizer step(s) of ``optim_wrapper`` outside torch.compile.

    A compiled step guards the learning rate (a Python float), so each new
    value of a schedule retraces it, up to dynamo's cache limit: minutes of
    compilation over a long run for a step that is a few fused ``foreach``
    kernels anyway. Works for an ``OptimWrapper`` and an
    ``OptimWrapperDict``; calling it twice changes nothing.
    """
    wrappers = getattr(optim_wrapper, 'optim_wrappers', None)
    for wrapper in (wrappers.values() if wrappers is not None
                    else [optim_wrapper]):
        optimizer = wrapper.optimizer
        if not getattr(optimizer.step, '_skd_uncompiled', False):
            step = torch.compiler.disable(optimizer.step)
            step._skd_uncompiled = True
            optimizer.step = step
