"""Feature distillation loss of SKD-BNN (channel and spatial attention)."""
from collections import defaultdict
from typing import List, Sequence

import torch
import torch.nn as nn
from mmpretrain.registry import MODELS

from ._validate import check_non_negative

_EPS = 1e-12


@MODELS.register_module()
class ChannelSpatialDistillLoss(nn.Module):
    """Match channel and spatial profiles of student and teacher units.

    For one unit with student features ``S`` and teacher features ``T``
    (``[B, C, H, W]``; ``T`` carries no gradient):

    - channel vectors ``v = mean over H, W`` -> ``[B, C]``,
    - spatial vectors ``u = mean over C`` -> ``[B, H*W]``,

    each row divided by its L2 norm, the student's norm detached (the student
    is pulled along the teacher's direction, not rescaled through its norm);
    ``L_unit = (||v_S - v_T||_F / C + ||u_S - u_T||_F / (H*W)) / B`` with
    Frobenius norms over the whole batch, and the loss is
    ``loss_weight * mean over units of L_unit`` (``alpha`` of the paper).

    The per-unit reductions run once per unit; normalisation and norms run
    once per group of units of equal shape.

    Args:
        loss_weight (float): ``alpha``, >= 0. Defaults to 1.0.
    """

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = check_non_negative('loss_weight', loss_weight,
                                              type(self).__name__)

    def forward(self, student: Sequence[torch.Tensor],
                teacher: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(student) != len(teacher) or not student:
            raise ValueError(
                f'{type(self).__name__} needs the same non-zero number of '
                f'student and teacher units, got {len(student)} and '
                f'{len(teacher)}')
        groups = defaultdict(list)
        for i, (s, t) in enumerate(zip(student, teacher)):
            if s.dim() != 4 or s.shape != t.shape:
                raise ValueError(
                    f'{type(self).__name__}: unit {i} must be [B, C, H, W] '
                    f'feature maps of equal shape, got student '
                    f'{tuple(s.shape)} and teacher {tuple(t.shape)}')
            groups[tuple(s.shape)].append((s, t.detach()))
        total: List[torch.Tensor] = []
        for (b, c, h, w), pairs in groups.items():
            v_s = torch.stack([_mean(s, (2, 3)) for s, _ in pairs])
            v_t = torch.stack([_mean(t, (2, 3)) for _, t in pairs])
            u_s = torch.stack([_mean(s, 1).flatten(1) for s, _ in pairs])
            u_t = torch.stack([_mean(t, 1).flatten(1) for _, t in pairs])
            per_unit = (_frob(_unit_rows(v_s, detach_norm=True)
                              - _unit_rows(v_t)) / c
                        + _frob(_unit_rows(u_s, detach_norm=True)
                                - _unit_rows(u_t)) / (h * w)) / b
            total.append(per_unit.sum())
        return self.loss_weight * torch.stack(total).sum() / len(student)


def _mean(x: torch.Tensor, dim) -> torch.Tensor:
    """Mean over ``dim``, at least in float32.

    bf16/fp16 features (autocast) are reduced into float32 vectors, since
    the differences of unit-norm rows below cancel most of their digits;
    float32 and float64 features are reduced exactly as by ``x.mean(dim)``.
    """
    return x.mean(dim=dim, dtype=torch.promote_types(x.dtype, torch.float32))


def _unit_rows(x: torch.Tensor, detach_norm: bool = False) -> torch.Tensor:
    """Rows of ``x`` (``[G, B, N]``) scaled to unit L2 norm; an all-zero
    row stays zero.

    An all-zero row (a dead unit: e.g. a binary conv behind a ReLU gives
    constant outputs that BatchNorm maps to 0) has no direction. Divided by
    the clamped norm its gradient would be ``1 / _EPS = 1e12`` times the
    incoming one, which wrecks the weights in one step (and is inf in
    fp16); it is divided by 1 instead, so its gradient is the incoming one.
    Every other row is divided exactly as before.
    """
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    norm = torch.where(norm == 0, torch.ones_like(norm), norm.clamp_min(_EPS))
    return x / (norm.detach() if detach_norm else norm)


def _frob(x: torch.Tensor) -> torch.Tensor:
    """Frobenius norm of each ``[B, N]`` slice of ``[G, B, N]`` -> ``[G]``."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1)
