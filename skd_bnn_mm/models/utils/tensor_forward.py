"""Run a model on an already preprocessed tensor."""
from typing import Any

import torch
import torch.nn as nn
from mmengine.model import BaseModel


def tensor_forward(model: nn.Module, inputs: torch.Tensor) -> Any:
    """Raw outputs of ``model`` on ``inputs``.

    An mmengine ``BaseModel`` (an mmpretrain classifier) is called with
    ``mode='tensor'``: no data preprocessor, no data samples, the head's raw
    output. Any other module is called as ``model(inputs)``.
    """
    if isinstance(model, BaseModel):
        return model(inputs, mode='tensor')
    return model(inputs)
