"""The latent full-precision teacher of SKD-BNN: a twin of the backbone.

The teacher is the student network run a second time, without gradient,
with two kinds of layers computing something else (docs/skd_bnn.md):

- every binary conv (:class:`ValueSwapConv`) computes the real conv
  ``r = conv2d(a_teacher, Wb)`` of the teacher's real input with the
  balanced, standardised latent weights, and returns ``|y| * sign(r)``,
  ``y`` being the student's output of the same conv in the same step:
  magnitudes from the binary path, signs from the real one. ``sign(0)`` is
  ``+1``, as everywhere in this project.
- every BatchNorm normalises with the teacher batch's own statistics and
  never reads or writes the running statistics.

Everything else (stem, shortcuts, activations, pooling) runs unchanged on
the teacher's activations. The twin is built once; each of its modules is a
shallow copy of the student's module (the same parameter, buffer and hook
dicts, so parameters, device moves, loaded checkpoints and hooks, e.g. the
unit recorder or a channels-last input hook, are the student's) with its own
children. Modules without children that need no change are the student's
modules themselves. No module of the student is modified, and nothing of the
twin changes per step, so ``torch.compile`` traces each pass once.
"""
import copy
from collections import deque
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers import IRConv2d


class _Feed:
    """The student's binary conv outputs of the current step, per conv name
    (one queue each, in call order); ``None`` outside a teacher pass."""

    def __init__(self) -> None:
        self.queues: Optional[Dict[str, deque]] = None


class ValueSwapConv(IRConv2d):
    """Teacher twin of an :class:`IRConv2d`: ``|y_student| * sign(r)``.

    Built by :func:`_shallow_copy` from the student's conv (it shares that
    conv's weight, bias and hooks), never by its constructor.
    """

    feed: _Feed
    feed_key: str

    def forward(self, x: Tensor) -> Tensor:
        queues = self.feed.queues
        if not (queues is not None and queues[self.feed_key]):
            raise RuntimeError(
                f'The teacher called binary conv {self.feed_key!r} more '
                'often than the student pass did; both must run the same '
                'forward, the student first.')
        y = queues[self.feed_key].popleft()
        r = self._conv_forward(x, self.standardized_weight(), self.bias)
        if r.shape != y.shape:
            raise RuntimeError(
                f'Teacher output {tuple(r.shape)} of conv {self.feed_key!r} '
                f'differs from the student output {tuple(y.shape)}.')
        # copysign keeps the magnitude of y and takes the sign bit of r;
        # adding +0.0 turns -0.0 into +0.0, so r == 0 gives +|y|
        return torch.copysign(y, r.add_(0.0))


def _shallow_copy(module: nn.Module, cls: Optional[type] = None):
    """``copy.copy(module)``, optionally as class ``cls``: a new module
    object sharing every ``__dict__`` entry (parameters, buffers, hooks)."""
    if cls is None:
        return copy.copy(module)
    twin = cls.__new__(cls)
    twin.__dict__.update(module.__dict__)
    return twin


def _twin(module: nn.Module, feed: _Feed, name: str = '') -> nn.Module:
    if isinstance(module, IRConv2d):
        twin = _shallow_copy(module, ValueSwapConv)
        twin.feed, twin.feed_key = feed, name
        return twin
    if isinstance(module, _BatchNorm):
        # without running statistics a BatchNorm always normalises with the
        # batch's statistics and updates none
        twin = _shallow_copy(module)
        twin.__dict__['_buffers'] = {k: None for k in module._buffers}
        twin.track_running_stats = False
        return twin
    if not module._modules:
        return module
    twin = _shallow_copy(module)
    twin.__dict__['_modules'] = {
        key: None if child is None else _twin(
            child, feed, f'{name}.{key}' if name else key)
        for key, child in module._modules.items()}
    return twin


class SelfTeacher:
    """SKD-BNN's teacher: a parameter-sharing twin of ``backbone``.

    Usage::

        teacher = SelfTeacher(backbone)
        recorder = OutputRecorder(backbone, teacher.conv_names)
        with recorder.record() as student:
            backbone(x)                          # the training forward
        with torch.no_grad():
            teacher(x, student)                  # the teacher forward

    Not an ``nn.Module`` (so the twin is in no ``state_dict`` and no
    optimizer). If the backbone's modules are replaced after this object was
    built (e.g. SyncBN conversion), :meth:`mirrors` turns false: build a new
    one (:class:`SKDImageClassifier` does so in ``train()``).

    Args:
        backbone: a module with at least one :class:`IRConv2d`.
    """

    def __init__(self, backbone: nn.Module) -> None:
        self.conv_names: List[str] = [
            n for n, m in backbone.named_modules() if isinstance(m, IRConv2d)]
        if not self.conv_names:
            raise ValueError(
                f'SelfTeacher needs binary convs (IRConv2d) in '
                f'{type(backbone).__name__}.')
        self._feed = _Feed()
        self._source = list(backbone.modules())
        self.twin = _twin(backbone, self._feed)
        self.twin.train(backbone.training)

    def mirrors(self, backbone: nn.Module) -> bool:
        """Whether the twin was built from exactly these modules."""
        modules = list(backbone.modules())
        return len(modules) == len(self._source) and all(
            a is b for a, b in zip(modules, self._source))

    def train(self, mode: bool = True) -> None:
        self.twin.train(mode)

    def __call__(self, inputs: Tensor,
                 student: Dict[str, Sequence[Tensor]]):
        """The twin's forward on ``inputs``; ``student`` maps every name of
        :attr:`conv_names` to that conv's outputs of the student pass (in
        call order), e.g. an :class:`OutputRecorder` record."""
        self._feed.queues = {n: deque(student[n]) for n in self.conv_names}
        try:
            out = self.twin(inputs)
            left = [n for n, q in self._feed.queues.items() if q]
            if left:
                raise RuntimeError(
                    f'The teacher ran fewer binary convs than the student '
                    f'pass ({left[0]!r} and {len(left) - 1} more unused); '
                    'both must run the same forward.')
        finally:
            self._feed.queues = None  # keep no tensors alive
        return out
