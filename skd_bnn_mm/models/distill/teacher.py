"""The latent full-precision "teacher" path of SKD-BNN, on any backbone.

The teacher is the student network itself, run a second time without
gradient while two things are changed in place, only for that pass:

- every binary conv computes ``r = conv2d(a_teacher, Wb)`` with its balanced,
  standardised real weights and the teacher's real input, then value-swaps:
  it returns ``|y| * sign(r)``, ``y`` being the output of the same conv (same
  call) in the student pass just before. Magnitudes come from the binary
  path and signs from the real path, which keeps the teacher's capacity close
  to the student's. ``sign(0)`` is taken as ``+1``, as everywhere in this
  project (a 1-bit value has two states), so ``r == 0`` gives ``+|y|``.
- every BatchNorm normalises with the teacher batch's own statistics and the
  module's affine parameters, and leaves ``running_mean`` / ``running_var`` /
  ``num_batches_tracked`` untouched (``track_running_stats`` is switched off
  for the pass; BatchNorm then behaves exactly so in training mode).

Everything else (stem, shortcuts, activations, pooling) runs unchanged on
the teacher's own activations, so each unit feeds the next. No module is
copied and no value leaves the device. Neither the layers nor the backbones
know about any of this.

The teacher also reuses the ``Wb`` that each binary conv computed in the
student pass (through the conv's ``keep_standardized`` slot, when it has
one) instead of standardising the same, unchanged weights again: the values
are bitwise the same, one standardisation per conv and step is saved.
"""
from collections import deque
from contextlib import contextmanager
from typing import (Deque, Dict, Iterator, List, Optional, Sequence, Tuple,
                    Type)

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers import IRConv2d

_MISSING = object()


class SelfTeacher:
    """Caches the binary conv outputs of a student pass, then runs the teacher.

    Usage (``backbone`` is any module containing binary convs)::

        teacher = SelfTeacher()
        with teacher.student_pass(backbone):
            feats = backbone(x)                  # normal training forward
        with torch.no_grad(), teacher.teacher_pass(backbone):
            backbone(x)                          # value-swapped teacher

    Modules are looked up at every call, so converting the model after this
    object was built (SyncBN, binarisation) is harmless. The cached outputs
    are detached views of tensors that autograd keeps anyway; nothing is
    cloned.

    Args:
        binary_types: classes of binary convs; each must provide
            ``standardized_weight()`` and ``_conv_forward`` like
            :class:`~skd_bnn_mm.models.layers.IRConv2d`.
        reuse_standardized: reuse the student pass's ``Wb`` in the teacher
            pass for convs that offer ``keep_standardized`` (bitwise the
            same result; ``False`` recomputes it, for comparison).
    """

    def __init__(self, binary_types: Sequence[Type[nn.Module]] = (IRConv2d, ),
                 reuse_standardized: bool = True) -> None:
        binary_types = tuple(binary_types)
        for cls in binary_types:
            if not (callable(getattr(cls, 'standardized_weight', None))
                    and callable(getattr(cls, '_conv_forward', None))):
                raise TypeError(
                    f'{cls.__name__} cannot serve as a binary conv of the '
                    'teacher: it needs standardized_weight() and '
                    '_conv_forward(x, weight, bias) (see IRConv2d).')
        self.binary_types: Tuple[Type[nn.Module], ...] = binary_types
        self.reuse_standardized = bool(reuse_standardized)
        self._cache: Dict[nn.Module, Deque[torch.Tensor]] = {}
        self._wb: Dict[nn.Module, torch.Tensor] = {}
        # one teacher forward per conv, kept across steps: torch.compile
        # guards on the identity of ``conv.forward``, and a new object every
        # step would recompile the backbone every step
        self._forwards: Dict[nn.Module, '_TeacherConv'] = {}

    def binary_convs(self, module: nn.Module) -> List[nn.Module]:
        return [m for m in module.modules() if isinstance(m, self.binary_types)]

    @contextmanager
    def student_pass(self, module: nn.Module) -> Iterator[None]:
        """Cache every binary conv output (detached) of the forward inside."""
        self._cache, self._wb = {}, {}
        handles, kept = [], []
        try:
            for conv in self.binary_convs(module):
                queue = self._cache.setdefault(conv, deque())
                handles.append(conv.register_forward_hook(_Cache(queue)))
                if self.reuse_standardized and hasattr(conv,
                                                       'keep_standardized'):
                    kept.append((conv, conv.__dict__.get('keep_standardized',
                                                         _MISSING)))
                    conv.keep_standardized = []
            yield
        finally:
            for handle in handles:
                handle.remove()
            for conv, old in kept:
                if conv.keep_standardized:
                    self._wb[conv] = conv.keep_standardized[0]
                if old is _MISSING:
                    del conv.keep_standardized  # back to the class default
                else:
                    conv.keep_standardized = old

    @contextmanager
    def teacher_pass(self, module: nn.Module) -> Iterator[None]:
        """Value-swapped binary convs and batch-statistics-only BatchNorms.

        Every change is undone on exit, also when the forward raises. Call it
        under ``torch.no_grad()``: the teacher is a fixed target.
        """
        if not any(self._cache.values()):
            raise RuntimeError(
                'teacher_pass() needs the binary conv outputs of a forward '
                'pass run inside student_pass() just before.')
        patched, norms = [], []
        try:
            for sub in module.modules():
                if isinstance(sub, self.binary_types):
                    patched.append((sub, sub.__dict__.get('forward',
                                                          _MISSING)))
                    forward = self._forwards.get(sub)
                    if forward is None:
                        forward = self._forwards[sub] = _TeacherConv(sub)
                    forward.queue = self._cache.get(sub)
                    forward.wb = self._wb.get(sub)
                    sub.forward = forward
                elif isinstance(sub, _BatchNorm) and sub.track_running_stats:
                    sub.track_running_stats = False
                    norms.append(sub)
            yield
            left = [type(c).__name__ for c, q in self._cache.items() if q]
            if left:
                raise RuntimeError(
                    f'The teacher pass ran fewer binary convs than the '
                    f'student pass ({len(left)} cached outputs unused, e.g. a '
                    f'{left[0]}); both must run the same forward.')
        finally:
            for norm in norms:
                norm.track_running_stats = True
            for conv, old in patched:
                forward = self._forwards[conv]
                forward.queue = forward.wb = None  # keep no tensors alive
                if old is _MISSING:
                    del conv.forward
                else:
                    conv.forward = old
            self._cache, self._wb = {}, {}


class _Cache:
    """Forward hook storing the detached output of a binary conv."""

    def __init__(self, queue: Deque[torch.Tensor]) -> None:
        self.queue = queue

    def __call__(self, module, args, output) -> None:
        self.queue.append(output.detach())


class _TeacherConv:
    """Teacher forward of one binary conv: ``|y_student| * sign(r)``."""

    def __init__(self, conv: nn.Module, queue=None,
                 wb: Optional[torch.Tensor] = None) -> None:
        self.conv = conv
        self.queue = queue
        self.wb = wb

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if not self.queue:
            raise RuntimeError(
                f'The teacher pass called a {type(conv).__name__} more often '
                'than the student pass did; both must run the same forward.')
        y = self.queue.popleft()
        wb = self.wb if self.wb is not None else conv.standardized_weight()
        r = conv._conv_forward(x, wb, conv.bias)
        if r.shape != y.shape:
            raise RuntimeError(
                f'Teacher conv output {tuple(r.shape)} differs from the '
                f'student output {tuple(y.shape)} of the same call.')
        # copysign keeps the magnitude of y and takes the sign bit of r (so
        # no y.abs() is needed); adding +0.0 turns a -0.0 into +0.0 so that
        # r == 0 gives +|y| (r is a fresh tensor: safe to modify)
        return torch.copysign(y, r.add_(0.0))
