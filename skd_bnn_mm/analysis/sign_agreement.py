"""How often a binary conv keeps the sign of its real-valued counterpart.

For every binary conv (:class:`~skd_bnn_mm.models.layers.IRConv2d`) on a
batch: the fraction of output elements where the binary output
``y = conv2d(sign(x), sign(Wb) * s)`` and the real output
``r = conv2d(x, Wb)`` (same real input ``x``, balanced and standardised
latent weights ``Wb``, same bias) have the same sign, with ``sign(0) = +1``
as everywhere in the project. This is the agreement that SKD-BNN's teacher
relies on when it keeps ``|y|`` and takes ``sign(r)``: a low value means the
binarisation flips many of the unit's outputs. Here both paths read the
same (student) input, so each unit is measured on its own.
"""
from collections import OrderedDict
from typing import Dict

import torch
import torch.nn as nn

from ..models.layers import IRConv2d
from ..models.utils.tensor_forward import tensor_forward


def _positive(t: torch.Tensor) -> torch.Tensor:
    return t >= 0


def sign_agreement(model: nn.Module, inputs: torch.Tensor,
                   **forward_kwargs) -> Dict[str, float]:
    """Per binary conv (by module name, in execution order) the fraction of
    equal output signs of the binary and the real conv on ``inputs``.

    The model runs once in eval mode without gradient; an mmengine
    ``BaseModel`` is called with ``mode='tensor'`` unless ``forward_kwargs``
    say otherwise. Raises ValueError when the model has no binary conv.
    """
    names = {id(m): n for n, m in model.named_modules()
             if isinstance(m, IRConv2d)}
    if not names:
        raise ValueError(f'{type(model).__name__} has no binary conv '
                         '(IRConv2d): nothing to compare.')
    equal: Dict[str, int] = OrderedDict()
    total: Dict[str, int] = {}

    def hook(module, args, output):
        name = names[id(module)]
        real = module._conv_forward(args[0], module.standardized_weight(),
                                    module.bias)
        same = (_positive(output) == _positive(real)).sum().item()
        equal[name] = equal.get(name, 0) + int(same)
        total[name] = total.get(name, 0) + output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if id(m) in names]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            if forward_kwargs:
                model(inputs, **forward_kwargs)
            else:
                tensor_forward(model, inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return OrderedDict((n, equal[n] / total[n]) for n in equal)
