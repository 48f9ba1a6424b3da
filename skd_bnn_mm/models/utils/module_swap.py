"""Swap the submodules of a model that a filter picks (one primitive for
binarising convs, replacing activations and packing convs for deployment)."""
from dataclasses import dataclass, field
from typing import Callable, Dict

import torch.nn as nn


@dataclass
class SwapReport:
    """What :func:`swap_modules` did.

    Attributes:
        model: the model after the swap; the replacement itself when the
            filter picked the root module.
        swapped: first module name (``named_modules()`` order, ``''`` for the
            root) -> the new module, one entry per distinct old module.
    """
    model: nn.Module
    swapped: Dict[str, nn.Module] = field(default_factory=dict)


def swap_modules(model: nn.Module,
                 filter_fn: Callable[[str, nn.Module], bool],
                 make_fn: Callable[[str, nn.Module], nn.Module]
                 ) -> SwapReport:
    """Replace, in place, every module for which ``filter_fn(name, module)``
    is true by ``make_fn(name, module)``.

    - A module held under several names (mmpretrain's ``BasicBlock.relu``)
      is seen once, under its first name, and every reference to it gets the
      same new module, so sharing is kept.
    - The children of a picked module are not visited: the replacement owns
      whatever it keeps of them.
    - The new module takes the old one's ``training`` flag.
    """
    mapping: Dict[int, nn.Module] = {}
    report = SwapReport(model=model)
    picked = ()
    for name, module in model.named_modules():
        if picked and name.startswith(picked):
            continue
        if not filter_fn(name, module):
            continue
        new = make_fn(name, module)
        new.train(module.training)
        mapping[id(module)] = new
        report.swapped[name] = new
        picked = picked + (name + '.', ) if name else ('', )
    if id(model) in mapping:
        report.model = mapping[id(model)]
        return report
    for _, parent in model.named_modules(remove_duplicate=False):
        # parent._modules, not named_children(): the latter yields a module
        # held under two names only once
        for child_name, child in list(parent._modules.items()):
            if child is not None and id(child) in mapping:
                setattr(parent, child_name, mapping[id(child)])
    return report
