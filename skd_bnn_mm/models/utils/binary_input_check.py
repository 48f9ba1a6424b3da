"""Catch binary convs that can only ever see non-negative inputs.

A binary conv computes ``sign(x)`` of its input (``sign(0) = +1``). If every
input is >= 0, typically because a ``ReLU``/``ReLU6`` (a module, or
``F.relu`` inside some ``forward``) runs before it, every binary activation
is +1: the conv outputs a constant map, and the network trains to chance with
no error anywhere. Graph analysis cannot see functional activations, so this
is checked on real data: :func:`arm_binary_input_check` puts one-shot hooks
on the model; the first forward records, for every binary conv, the minimum
of its input and which module produced that input; at the end of that
forward the minima are compared with 0 (one device sync) and every hook is
removed, so later iterations run exactly the code they would without it.

Binary convs are the modules with a ``binarize_input`` method
(:class:`~skd_bnn_mm.models.layers.IRConv2d` and its subclasses).
"""
import logging
import warnings
import weakref
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.logging import print_log

from .signed_activations import is_activation

ACTIONS = ('error', 'warn')
_SHOWN = 12  # convs named in the message

# conv -> the check that watches it; a second check on the same model (e.g.
# BinarizedBackbone's and BinaryInputCheckHook's) leaves those convs alone
_WATCHED: 'weakref.WeakKeyDictionary[nn.Module, BinaryInputCheck]' = (
    weakref.WeakKeyDictionary())

FIX = (
    'Put a signed activation in front of binary convs: '
    "act_cfg=dict(type='Hardtanh') in backbones that take act_cfg (VGG, "
    'MobileNetV2, ConvModule), '
    "dict(type='BinarizedBackbone', backbone=..., replace_activations=True) "
    'in a config, or skd_bnn_mm.models.utils.replace_activations(model) in '
    'Python; an F.relu inside a forward needs a code change. To only warn, '
    "use action='warn' (BinaryInputCheckHook, BinarizedBackbone "
    'input_check).')


class NonNegativeBinaryInputError(RuntimeError):
    """Binary convs whose inputs were all >= 0 on the first forward."""


class NonNegativeBinaryInputWarning(UserWarning):
    """Warning variant of :class:`NonNegativeBinaryInputError`."""


@dataclass
class NonNegativeInput:
    """One binary conv that saw only inputs >= 0.

    Attributes:
        conv: the conv's module name.
        producer: name of the module whose output was the conv's input, or
            ``None`` when the input was computed by a function inside a
            forward (e.g. ``F.relu``).
        producer_type: that module's class name (``'ReLU'``), or ``None``.
        last_module: when ``producer`` is None, the last module that ran
            before the conv (the function came after it).
        activation: the last activation module that ran before the conv
            (``'ReLU'`` ...), as ``'name (type)'``, when ``producer`` is not
            itself one (e.g. a max-pool after a ReLU), else ``None``.
    """
    conv: str
    producer: Optional[str]
    producer_type: Optional[str]
    last_module: Optional[str] = None
    activation: Optional[str] = None

    def describe(self) -> str:
        act = ('' if self.activation is None else
               f'; last activation before it: {self.activation}')
        if self.producer is not None:
            return (f'{self.conv} (after {self.producer}, '
                    f'{self.producer_type}{act})')
        after = (f', after {self.last_module}'
                 if self.last_module is not None else '')
        return (f'{self.conv} (input computed inside a forward, e.g. a '
                f'functional F.relu{after}{act})')


def is_binary_conv(module: nn.Module) -> bool:
    return callable(getattr(module, 'binarize_input', None))


def _first_tensor(args) -> Optional[torch.Tensor]:
    x = args[0] if isinstance(args, (tuple, list)) and args else args
    return x if isinstance(x, torch.Tensor) else None


class BinaryInputCheck:
    """One-shot hooks that find binary convs fed only with values >= 0.

    Use :func:`arm_binary_input_check`. The check completes at the end of the
    first forward of ``root`` (or at :meth:`finish`, whichever comes first);
    its result is :attr:`findings`.

    Args:
        model: the module whose binary convs are watched.
        action: ``'error'`` raises :class:`NonNegativeBinaryInputError`,
            ``'warn'`` logs and warns (:class:`NonNegativeBinaryInputWarning`).
        root: module whose forward ends the check; defaults to ``model``.
        prefix: put in front of module names in messages (e.g.
            ``'backbone.'``).
        exclusive: skip convs another exclusive check watches, and claim the
            others.
    """

    def __init__(self,
                 model: nn.Module,
                 action: Optional[str] = 'error',
                 root: Optional[nn.Module] = None,
                 prefix: str = '',
                 exclusive: bool = True) -> None:
        if action is not None and action not in ACTIONS:
            raise ValueError(f'action must be one of {ACTIONS} (or None to '
                             f'switch the check off), got {action!r}')
        self.action = action
        self.prefix = prefix
        self.findings: Optional[List[NonNegativeInput]] = None
        self.num_convs = 0
        self.num_seen = 0
        self._mins: Dict[str, torch.Tensor] = {}
        self._producers: Dict[str, tuple] = {}
        # id(tensor) -> (weakref to it, name of the module that returned it)
        self._outputs: Dict[int, tuple] = {}
        self._last_module: Optional[str] = None
        self._last_activation: Optional[tuple] = None
        self._handles = []
        convs = [(n, m) for n, m in model.named_modules()
                 if is_binary_conv(m) and not (exclusive and m in _WATCHED)]
        if not convs:
            self.findings = []
            return
        self._conv_names = [n for n, _ in convs]
        self.num_convs = len(convs)
        for name, conv in convs:
            if exclusive:
                _WATCHED[conv] = self
            self._hook(conv, conv.register_forward_pre_hook,
                       self._conv_pre_hook(name))
        for name, m in model.named_modules():
            leaf = is_activation(m) or not any(True for _ in m.children())
            self._hook(m, m.register_forward_hook,
                       self._output_hook(name, leaf))
        root = model if root is None else root
        self._hook(root, root.register_forward_hook, self._root_hook)

    @property
    def done(self) -> bool:
        return self.findings is not None

    def _hook(self, module: nn.Module, register: Callable, fn: Callable):
        ref = weakref.ref(module)

        def hook(mod, *args):
            # a deep copy of the model carries this function along: it is a
            # no-op there, and drops out once the check is complete
            if mod is not ref():
                if self.done:
                    for hooks in (mod._forward_pre_hooks, mod._forward_hooks):
                        for key in [k for k, v in hooks.items() if v is hook]:
                            del hooks[key]
                return None
            return fn(mod, *args)

        self._handles.append(register(hook))

    def _root_hook(self, mod, args, out) -> None:
        self.finish()  # returns None: the output stays the model's

    def _output_hook(self, name: str, leaf: bool):
        # The producer named is the innermost module that computed the
        # tensor: a leaf (e.g. an in-place ReLU after BN) overwrites, a
        # container only fills in what a function inside it computed (timm's
        # BatchNormAct2d), a pass-through (Identity, eval Dropout) adds
        # nothing.

        def fn(mod, args, out):
            if leaf:
                self._last_module = name
                if is_activation(mod):
                    self._last_activation = (name, type(mod).__name__)
            if not isinstance(out, torch.Tensor):
                return
            if args and out is args[0] and not is_activation(mod):
                return
            if not leaf:
                known = self._outputs.get(id(out))
                if known is not None and known[0]() is out:
                    return
            self._outputs[id(out)] = (weakref.ref(out), name,
                                      type(mod).__name__)

        return fn

    def _conv_pre_hook(self, name: str):

        def fn(mod, args):
            if name in self._mins:
                return None
            x = _first_tensor(args)
            if x is None or x.numel() == 0:
                return None
            self._mins[name] = x.detach().amin()
            entry = self._outputs.get(id(x))
            act = self._last_activation
            if entry is not None and entry[0]() is x:
                if act is not None and act[0] == entry[1]:
                    act = None  # the producer is that activation
                self._producers[name] = (entry[1], entry[2], None, act)
            else:
                self._producers[name] = (None, None, self._last_module, act)
            return None

        return fn

    def remove(self) -> None:
        """Remove every hook (the check stays incomplete if not done)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._outputs.clear()

    def finish(self) -> List[NonNegativeInput]:
        """Evaluate what was recorded, remove the hooks and act."""
        if self.done:
            return self.findings
        if not self._mins:  # a forward that reached no binary conv
            return []
        self.remove()
        names = list(self._mins)
        self.num_seen = len(names)
        device = self._mins[names[0]].device
        nonneg = (torch.stack([self._mins[n].float().to(device)
                               for n in names]) >= 0).tolist()  # one sync
        p = self.prefix

        def full(n):
            return None if n is None else p + n

        def activation(a):
            return None if a is None else f'{p}{a[0]} ({a[1]})'

        self.findings = [
            NonNegativeInput(p + n, full(self._producers[n][0]),
                             self._producers[n][1],
                             full(self._producers[n][2]),
                             activation(self._producers[n][3]))
            for n, bad in zip(names, nonneg) if bad
        ]
        self._mins.clear()
        if self.findings and self.action is not None:
            self._act()
        return self.findings

    def _act(self) -> None:
        msg = (f'{len(self.findings)} of {self.num_seen} binary convs saw '
               'only inputs >= 0 on the first forward, so every binary '
               'activation is +1 and they cannot learn: ' +
               '; '.join(f.describe() for f in self.findings[:_SHOWN]))
        if len(self.findings) > _SHOWN:
            msg += f'; and {len(self.findings) - _SHOWN} more'
        msg += '. ' + FIX
        if self.action == 'error':
            raise NonNegativeBinaryInputError(msg)
        print_log(msg, logger='current', level=logging.WARNING)
        warnings.warn(msg, NonNegativeBinaryInputWarning, stacklevel=2)


def arm_binary_input_check(model: nn.Module,
                           action: Optional[str] = 'error',
                           root: Optional[nn.Module] = None,
                           prefix: str = '') -> Optional[BinaryInputCheck]:
    """Check the binary convs of ``model`` on its first forward.

    Returns the :class:`BinaryInputCheck` (``None`` when ``action`` is None).
    Convs already watched by another check are skipped.
    """
    if action is None:
        return None
    return BinaryInputCheck(model, action=action, root=root, prefix=prefix)


def find_nonnegative_inputs(model: nn.Module, *args,
                            **kwargs) -> List[NonNegativeInput]:
    """Run ``model(*args, **kwargs)`` once (no grad) and return the binary
    convs whose inputs were all >= 0, without raising or warning."""
    check = BinaryInputCheck(model, action=None, exclusive=False)
    try:
        with torch.no_grad():
            model(*args, **kwargs)
        return check.finish()
    finally:
        check.remove()


__all__: Sequence[str] = [
    'BinaryInputCheck', 'NonNegativeBinaryInputError',
    'NonNegativeBinaryInputWarning', 'NonNegativeInput',
    'arm_binary_input_check', 'find_nonnegative_inputs', 'is_binary_conv'
]
