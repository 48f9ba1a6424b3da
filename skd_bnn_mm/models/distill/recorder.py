"""Record the outputs of modules chosen by name, only inside a context."""
import re
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Union

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


def resolve_units(module: nn.Module, units: Optional[Units]) -> List[str]:
    """Names of the unit modules of ``module``; a clear ValueError if one is
    unknown.

    ``units`` is a list of exact module names, or one regular expression
    matched against every name with :func:`re.fullmatch` (e.g.
    ``r'layer\\d+\\.\\d+\\.act\\d'``; matches keep the order of
    ``named_modules()``), or ``None`` for the module's own ``unit_names()``.
    """
    if units is None:
        if not callable(getattr(module, 'unit_names', None)):
            raise ValueError(
                f'units=None needs a module with unit_names(); '
                f'{type(module).__name__} has none. Give the unit module '
                'names (or a regex) explicitly; candidates: '
                f'{_listing(_candidates(module))}')
        units = list(module.unit_names())
    elif not isinstance(units, str):
        units = list(units)
        if not units or not all(isinstance(u, str) for u in units):
            raise TypeError('units must be a regex string or a non-empty '
                            f'list of module names, got {units!r}')
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
    return units


class OutputRecorder:
    """Forward hooks on the named submodules of ``module`` that collect their
    outputs inside :meth:`record`, and do nothing outside it.

    The hooks are registered here, once: registering hooks inside a step
    would break a ``torch.compile`` graph at each registration. A module that
    runs several times in one forward (an activation shared by two convs, as
    in mmpretrain's ``BasicBlock``) yields one output per call, in call
    order. Modules that share this module's hooks (the SKD teacher's twin)
    record into the same context.

    Args:
        module: the module whose submodules are recorded.
        names: submodule names, each recorded under its name.
    """

    def __init__(self, module: nn.Module, names: Sequence[str]) -> None:
        self.names = list(dict.fromkeys(names))
        self._hooks: List['_Append'] = []
        self._handles: List = []
        self.attach(module)

    def attach(self, module: nn.Module) -> None:
        """(Re-)register the hooks on the submodules of ``module``."""
        self.remove()
        for name in self.names:
            hook = _Append(name)
            self._handles.append(
                module.get_submodule(name).register_forward_hook(hook))
            self._hooks.append(hook)

    def remove(self) -> None:
        """Take every hook of this recorder off its module."""
        for handle in self._handles:
            handle.remove()
        self._hooks, self._handles = [], []

    @contextmanager
    def record(self) -> Iterator[Dict[str, List[torch.Tensor]]]:
        """Yields ``{name: [outputs...]}``, filled by the forward passes run
        inside the context."""
        store: Dict[str, List[torch.Tensor]] = {n: [] for n in self.names}
        try:
            for hook in self._hooks:
                hook.outputs = store[hook.name]
            yield store
        finally:
            for hook in self._hooks:
                hook.outputs = None


class _Append:
    """Forward hook appending the output to ``outputs`` while it is a list
    (picklable, no closure); ``None`` outside :meth:`OutputRecorder.record`.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.outputs: Optional[List] = None

    def __call__(self, module, args, output) -> None:
        if self.outputs is not None:
            self.outputs.append(output)


def flatten_records(store: Dict[str, List],
                    names: Optional[Sequence[str]] = None
                    ) -> List[torch.Tensor]:
    """The outputs of ``names`` (default: all), by name then call order."""
    return [t for n in (store if names is None else names)
            for t in store[n]]
