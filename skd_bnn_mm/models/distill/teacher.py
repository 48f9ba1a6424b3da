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

For ``torch.compile`` nothing is registered, assigned or deleted on a module
per step: each binary conv gets one permanent forward (``_PassForward``, an
instance attribute installed by :meth:`SelfTeacher.attach`) that runs the
conv's own forward outside the passes, also caches its output in the
student pass and value-swaps in the teacher pass. The passes only switch
its mode, so compile traces each pass once and reuses the traces (a module
attribute set and deleted every step retraced the backbone every step,
registering hooks every step split the graph).
"""
from collections import deque
from contextlib import contextmanager
from typing import (Iterator, List, Optional, Sequence, Tuple,
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
    cloned. :meth:`attach` installs the per-conv forwards (once; the passes
    do it for convs that have none yet); :meth:`remove` takes them off.

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
        self._pending: List['_PassForward'] = []
        self._attached: List[nn.Module] = []

    def binary_convs(self, module: nn.Module) -> List[nn.Module]:
        return [m for m in module.modules() if isinstance(m, self.binary_types)]

    def attach(self, module: nn.Module) -> List['_PassForward']:
        """Install the per-conv forwards in the binary convs of ``module``
        that have none yet; returns them, one per conv.

        Call it once before ``torch.compile`` runs the model (the classifier
        does so when built), so that nothing on a module changes inside a
        compiled region.
        """
        forwards = []
        for conv in self.binary_convs(module):
            forward = conv.__dict__.get('forward')
            if not (isinstance(forward, _PassForward) and forward.conv is conv):
                # none yet, or one copied from another conv (a shallow copy
                # of a module shares its __dict__ entries)
                if isinstance(forward, _PassForward):
                    forward = _PassForward(conv, forward.inner,
                                           forward.own_slot)
                else:
                    forward = _PassForward(
                        conv, forward,
                        conv.__dict__.get('keep_standardized', _MISSING))
                conv.forward = forward
                self._attached.append(conv)
            slot = forward.slot if self.reuse_standardized and hasattr(
                conv, 'keep_standardized') else forward.own_slot
            if conv.__dict__.get('keep_standardized', _MISSING) is not slot:
                if slot is _MISSING:
                    del conv.keep_standardized  # back to the class default
                else:
                    conv.keep_standardized = slot
            forwards.append(forward)
        return forwards

    def remove(self) -> None:
        """Give the convs attached by this object their own forward back."""
        for conv in self._attached:
            forward = conv.__dict__.get('forward')
            if isinstance(forward, _PassForward):
                if forward.inner is None:
                    del conv.forward
                else:
                    conv.forward = forward.inner
                if conv.__dict__.get('keep_standardized') is forward.slot:
                    if forward.own_slot is _MISSING:
                        del conv.keep_standardized
                    else:  # the conv's own value from before attach()
                        conv.keep_standardized = forward.own_slot
        self._attached, self._pending = [], []

    @contextmanager
    def student_pass(self, module: nn.Module) -> Iterator[None]:
        """Cache every binary conv output (detached) of the forward inside."""
        forwards = self.attach(module)
        self._pending = []
        for forward in forwards:
            forward.start_student()
        try:
            yield
        finally:
            for forward in forwards:
                forward.end_student()
            self._pending = forwards

    @contextmanager
    def teacher_pass(self, module: nn.Module) -> Iterator[None]:
        """Value-swapped binary convs and batch-statistics-only BatchNorms.

        Every change is undone on exit, also when the forward raises. Call it
        under ``torch.no_grad()``: the teacher is a fixed target.
        """
        if not any(f.teacher.queue for f in self._pending):
            raise RuntimeError(
                'teacher_pass() needs the binary conv outputs of a forward '
                'pass run inside student_pass() just before.')
        forwards, norms = self._pending, []
        try:
            for forward in forwards:
                forward.mode = 'teacher'
            for sub in module.modules():
                if isinstance(sub, _BatchNorm) and sub.track_running_stats:
                    sub.track_running_stats = False
                    norms.append(sub)
            yield
            left = [type(f.conv).__name__ for f in forwards if f.teacher.queue]
            if left:
                raise RuntimeError(
                    f'The teacher pass ran fewer binary convs than the '
                    f'student pass ({len(left)} cached outputs unused, e.g. a '
                    f'{left[0]}); both must run the same forward.')
        finally:
            for norm in norms:
                norm.track_running_stats = True
            for forward in forwards:
                forward.end_teacher()
            self._pending = []


class _PassForward:
    """The permanent forward of one binary conv (see the module docstring).

    ``mode`` None: the conv's own forward (``inner``, or its class's
    ``forward``); ``'student'``: the same, and the detached output is
    queued; ``'teacher'``: :class:`_TeacherConv` on the queued outputs.
    ``slot`` is the conv's ``keep_standardized`` list when ``Wb`` is
    reused: one placeholder element outside the student pass (the conv then
    keeps nothing), emptied for the pass (the conv appends its ``Wb``).

    It holds its conv, so a shallow copy of the conv (which shares the
    instance ``__dict__``, as ``nn.DataParallel`` replicas do) runs the
    original's forward until a pass re-attaches it; SKD training runs under
    no wrapper or DDP, which replicates nothing.
    """

    def __init__(self, conv: nn.Module, inner=None,
                 own_slot=_MISSING) -> None:
        self.conv = conv
        self.inner = inner
        self.own_slot = own_slot  # the conv's keep_standardized before
        self.mode: Optional[str] = None
        self.slot: List = [None]
        self.teacher = _TeacherConv(conv)

    def start_student(self) -> None:
        self.teacher.queue, self.teacher.wb = deque(), None
        self.slot.clear()
        self.mode = 'student'

    def end_student(self) -> None:
        self.mode = None
        if self.slot and self.slot[0] is not None:
            self.teacher.wb = self.slot[0]
        self.slot[:] = [None]

    def end_teacher(self) -> None:
        self.mode = None
        self.teacher.queue = self.teacher.wb = None  # keep no tensors alive

    def __call__(self, *args, **kwargs):
        if self.mode == 'teacher':
            return self.teacher(*args, **kwargs)
        if self.inner is not None:
            out = self.inner(*args, **kwargs)
        else:
            out = type(self.conv).forward(self.conv, *args, **kwargs)
        if self.mode == 'student':
            self.teacher.queue.append(out.detach())
        return out


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
