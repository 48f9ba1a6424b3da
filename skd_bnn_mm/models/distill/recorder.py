"""Record the outputs of modules chosen by name, only inside a context."""
import re
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

Units = Union[str, Sequence[str]]

#: how many candidate names an error message lists before eliding the rest
_MAX_LISTED = 60


def _candidates(module: nn.Module) -> List[str]:
    """Names of the leaf modules: where unit outputs usually come from."""
    return [n for n, m in module.named_modules()
            if n and not any(True for _ in m.children())]


def _listing(names: List[str]) -> str:
    shown = ', '.join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f', ... ({more} more)' if more > 0 else '')


class UnitRecorder:
    """Forward hooks that collect module outputs, selected by module name.

    Names are relative to the module passed to :meth:`resolve` /
    :meth:`record` (the backbone for SKD-BNN). ``units`` is either a list of
    exact names or one regular expression matched against every name with
    :func:`re.fullmatch` (e.g. ``r'layer\\d+\\.\\d+\\.act\\d'``); the matches
    keep the order of ``named_modules()``. ``None`` asks the module for its
    own ``unit_names()``.

    A module that runs several times in one forward pass (an activation
    module shared by two convs, as in mmpretrain's ``BasicBlock``) yields one
    recorded output per call, in call order.

    Each unit module gets one forward hook, at :meth:`attach` or the first
    :meth:`record` that needs it, and keeps it: outside :meth:`record` the hook returns at once
    (inference and validation record nothing). Registering hooks anew at
    every step would break ``torch.compile``'s graph at each registration and
    compile the backbone piecemeal (measured on CPU: a compiled SKD-BNN
    ResNet-20 step slower than the uncompiled one). :meth:`remove` takes
    the hooks off.
    """

    def __init__(self, units: Optional[Units]) -> None:
        if units is not None and not isinstance(units, str):
            units = list(units)
            if not units or not all(isinstance(u, str) for u in units):
                raise TypeError(
                    'units must be a regex string or a non-empty list of '
                    f'module names, got {units!r}')
        self.units = units
        self._hooks: Dict[nn.Module, '_Append'] = {}
        self._handles: List = []

    def resolve(self, module: nn.Module) -> List[str]:
        """Module names to hook; a clear ValueError if any is unknown."""
        units = self.units
        if units is None:
            if not callable(getattr(module, 'unit_names', None)):
                raise ValueError(
                    f'units=None needs a module with unit_names(); '
                    f'{type(module).__name__} has none. Give the unit '
                    'module names (or a regex) explicitly; candidates: '
                    f'{_listing(_candidates(module))}')
            units = list(module.unit_names())
        names = dict(module.named_modules())
        if isinstance(units, str):
            try:
                pattern = re.compile(units)
            except re.error as e:
                raise ValueError(f'units regex {units!r} is invalid: {e}') \
                    from None
            found = [n for n in names if n and pattern.fullmatch(n)]
            if not found:
                raise ValueError(
                    f'units regex {units!r} matches no module of '
                    f'{type(module).__name__}; candidate names: '
                    f'{_listing(_candidates(module))}')
            return found
        unknown = [u for u in units if u not in names or not u]
        if unknown:
            raise ValueError(
                f'unknown unit module name(s) {unknown} in '
                f'{type(module).__name__}; candidate names: '
                f'{_listing(_candidates(module))}')
        if len(set(units)) != len(units):
            raise ValueError(f'units lists a module twice: {units}')
        return list(units)

    @contextmanager
    def record(self, module: nn.Module) -> Iterator[Dict[str, List]]:
        """Hook the units of ``module``; yields ``{name: [outputs...]}``.

        The lists fill while forward passes run inside the context; use
        :func:`flatten_records` for one list of tensors in unit order.
        """
        store: Dict[str, List[torch.Tensor]] = {}
        active = []
        try:
            for name, hook in self.attach(module):
                hook.outputs = store.setdefault(name, [])
                active.append(hook)
            yield store
        finally:
            for hook in active:
                hook.outputs = None

    def attach(self, module: nn.Module) -> List[Tuple[str, '_Append']]:
        """Register the (idle) hooks of the units of ``module`` that have
        none yet; ``[(name, hook)]`` in unit order.

        Call it once before ``torch.compile`` runs the model (the classifier
        does so when built): a registration inside a compiled region breaks
        the graph there.
        """
        hooks = []
        for name in self.resolve(module):
            sub = module.get_submodule(name)
            hook = self._hooks.get(sub)
            if hook is None:
                hook = self._hooks[sub] = _Append()
                self._handles.append(sub.register_forward_hook(hook))
            hooks.append((name, hook))
        return hooks

    def remove(self) -> None:
        """Take every hook of this recorder off its module."""
        for handle in self._handles:
            handle.remove()
        self._hooks, self._handles = {}, []


class _Append:
    """Forward hook appending the output to ``outputs`` while it is a list
    (picklable, no closure); ``None`` outside :meth:`UnitRecorder.record`."""

    def __init__(self) -> None:
        self.outputs: Optional[List] = None

    def __call__(self, module, args, output) -> None:
        if self.outputs is not None:
            self.outputs.append(output)


def flatten_records(store: Dict[str, List]) -> List[torch.Tensor]:
    """All recorded outputs, by unit name then call order."""
    return [t for outputs in store.values() for t in outputs]
