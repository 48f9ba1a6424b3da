"""Label-cluster loss of SKD-BNN on penultimate features."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS

from ._validate import check_non_negative


@MODELS.register_module()
class LabelClusterLoss(nn.Module):
    """Pull each penultimate feature towards its class centre in the batch.

    ``c_y`` is the mean feature of the samples of class ``y`` in the batch
    (detached: a target, not a path for gradients); the loss is
    ``loss_weight * mean_i (1 - cos(P_i, c_{y_i})) / 2``, in ``[0, 1]``.
    Centres are computed with ``index_add_`` over ``num_classes`` rows, with
    no loop over classes and no host sync, in at least float32.

    Args:
        loss_weight (float): ``gamma``, >= 0. Defaults to 0.01.
    """

    def __init__(self, loss_weight: float = 0.01) -> None:
        super().__init__()
        self.loss_weight = check_non_negative('loss_weight', loss_weight,
                                              type(self).__name__)

    def forward(self, feats: torch.Tensor, labels: torch.Tensor,
                num_classes: Optional[int] = None) -> torch.Tensor:
        """
        Args:
            feats: ``[B, D]`` penultimate features.
            labels: ``[B]`` class indices.
            num_classes: number of classes; when None it is read from
                ``labels`` (one host sync).
        """
        if feats.dim() != 2 or labels.shape != feats.shape[:1]:
            raise ValueError(
                f'{type(self).__name__} needs feats [B, D] and labels [B], '
                f'got {tuple(feats.shape)} and {tuple(labels.shape)}')
        if num_classes is None:
            num_classes = int(labels.max()) + 1
        # at least float32: bf16/fp16 features (autocast) would sum into
        # coarse centres and round cosines close to 1
        feats = feats.to(torch.promote_types(feats.dtype, torch.float32))
        detached = feats.detach()
        sums = detached.new_zeros(num_classes, feats.shape[1])
        sums.index_add_(0, labels, detached)
        counts = detached.new_zeros(num_classes).index_add_(
            0, labels, detached.new_ones(labels.shape))
        centres = sums / counts.clamp_min(1)[:, None]
        cos = F.cosine_similarity(feats, centres.index_select(0, labels),
                                  dim=1)
        return self.loss_weight * ((1 - cos) / 2).mean()
