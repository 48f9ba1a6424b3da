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
    recorded output per call, in call order. Hooks exist only inside
    :meth:`record`, so inference and validation never pay for recording.
    """

    def __init__(self, units: Optional[Units]) -> None:
        if units is not None and not isinstance(units, str):
            units = list(units)
            if not units or not all(isinstance(u, str) for u in units):
                raise TypeError(
                    'units must be a regex string or a non-empty list of '
                    f'module names, got {units!r}')
        self.units = units

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
        handles = []
        try:
            for name in self.resolve(module):
                outputs = store.setdefault(name, [])
                handles.append(module.get_submodule(name).register_forward_hook(
                    _Append(outputs)))
            yield store
        finally:
            for handle in handles:
                handle.remove()


class _Append:
    """Forward hook appending the output to a list (picklable, no closure)."""

    def __init__(self, outputs: List) -> None:
        self.outputs = outputs

    def __call__(self, module, args, output) -> None:
        self.outputs.append(output)


def flatten_records(store: Dict[str, List]) -> List[torch.Tensor]:
    """All recorded outputs, by unit name then call order."""
    return [t for outputs in store.values() for t in outputs]
