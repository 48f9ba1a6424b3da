"""Soft-label loss of SKD-BNN: KL to the per-class historical logits."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS

from ._validate import check_non_negative, check_positive


@MODELS.register_module()
class SoftLabelKLLoss(nn.Module):
    """``loss_weight * T^2 * KL(softmax(target/T) || softmax(logits/T))``.

    ``target`` are the soft-label bank's logits for each sample's class
    (``[B, C]``, no gradient); the KL is summed over classes and averaged over
    the batch. ``T^2`` keeps the gradient scale independent of ``T``. It is
    computed in at least float32, also for bf16/fp16 logits (autocast).

    Args:
        loss_weight (float): ``beta``, >= 0. Defaults to 0.05.
        temperature (float): ``T``, > 0. Defaults to 4.0.
    """

    def __init__(self, loss_weight: float = 0.05,
                 temperature: float = 4.0) -> None:
        super().__init__()
        owner = type(self).__name__
        self.loss_weight = check_non_negative('loss_weight', loss_weight,
                                              owner)
        self.temperature = check_positive('temperature', temperature, owner)

    def forward(self, logits: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape or logits.dim() != 2:
            raise ValueError(
                f'{type(self).__name__} needs logits and target of the same '
                f'shape [B, C], got {tuple(logits.shape)} and '
                f'{tuple(target.shape)}')
        t = self.temperature
        # at least float32: under bf16/fp16 autocast the KL of two close
        # distributions would lose most of its digits
        dtype = torch.promote_types(logits.dtype, torch.float32)
        log_p = F.log_softmax(logits.to(dtype) / t, dim=1)
        log_q = F.log_softmax(target.detach().to(dtype) / t, dim=1)
        kl = F.kl_div(log_p, log_q, reduction='batchmean', log_target=True)
        return self.loss_weight * t * t * kl
