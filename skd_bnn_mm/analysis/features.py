"""Penultimate features of a classifier over a data loader."""
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn as nn


@torch.no_grad()
def penultimate_features(model: nn.Module, data_loader,
                         max_samples: Optional[int] = None
                         ) -> Tuple[np.ndarray, np.ndarray]:
    """``(features [N, D], labels [N])`` of an mmpretrain classifier.

    The features are the input of the final linear layer
    (``model.extract_feat(inputs, stage='pre_logits')``), computed in eval
    mode after the model's own data preprocessor; at most ``max_samples``
    images are used (all when None).
    """
    if not hasattr(model, 'extract_feat'):
        raise TypeError(f'{type(model).__name__} has no extract_feat(); '
                        'expected an mmpretrain ImageClassifier')
    was_training = model.training
    model.eval()
    feats, labels = [], []
    count = 0
    try:
        for batch in data_loader:
            data = model.data_preprocessor(batch, False)
            out = model.extract_feat(data['inputs'], stage='pre_logits')
            if isinstance(out, (tuple, list)):
                out = out[-1]
            feats.append(out.flatten(1).float().cpu())
            labels.append(torch.cat([s.gt_label for s in
                                     data['data_samples']]).cpu())
            count += out.shape[0]
            if max_samples is not None and count >= max_samples:
                break
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError('the data loader yielded no batch')
    f = torch.cat(feats).numpy()
    y = torch.cat(labels).numpy()
    if max_samples is not None:
        f, y = f[:max_samples], y[:max_samples]
    return f, y
