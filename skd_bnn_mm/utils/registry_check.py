"""Find the ``type`` names of a config that no registry knows.

A misspelt ``type`` fails deep inside a build (mmcv's conv builder even
reports "Cannot find None in registry"); this walks the config instead and
says where the unknown name is and which registered names are close.
"""
import difflib
from typing import Any, Iterable, List, NamedTuple, Sequence


class UnknownType(NamedTuple):
    """An unregistered ``type`` value at ``path`` (e.g. ``backbone.type``)."""
    path: str
    name: str
    suggestions: List[str]


def registered_names(registry) -> List[str]:
    """Names in ``registry`` and its parents (what ``registry.get`` finds)."""
    names, reg = set(), registry
    while reg is not None:
        names.update(reg.module_dict)
        reg = reg.parent
    return sorted(names)


def _walk(node: Any, path: str, skip: Sequence[str]) -> Iterable:
    if isinstance(node, dict):
        kind = node.get('type')
        if isinstance(kind, str):
            yield f'{path}.type' if path else 'type', kind
        for key, value in node.items():
            if key in skip or key == 'type':
                continue
            yield from _walk(value, f'{path}.{key}' if path else str(key),
                             skip)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f'{path}.{i}', skip)


def unknown_types(cfg: Any, registry,
                  skip: Sequence[str] = ('init_cfg', )) -> List[UnknownType]:
    """Every ``type`` string of ``cfg`` that ``registry`` cannot resolve.

    Args:
        cfg: a config dict (nested dicts and lists).
        registry: an mmengine registry, e.g. mmpretrain's ``MODELS``; names
            are looked up as ``registry.get`` does (scope prefixes and parent
            registries included).
        skip: keys whose values belong to other registries (``init_cfg``:
            weight initialisers).
    """
    known = registered_names(registry)
    found = []
    for path, name in _walk(cfg, '', skip):
        try:
            ok = registry.get(name) is not None
        except Exception:  # a malformed scope prefix is unknown as well
            ok = False
        if not ok:
            short = name.split('.')[-1]
            found.append(UnknownType(
                path, name,
                difflib.get_close_matches(short, known, n=3, cutoff=0.6)))
    return found


def describe_unknown_types(items: List[UnknownType], where: str = '') -> str:
    """One line per unknown name, with the close registered names."""
    lines = []
    for item in items:
        hint = (f'did you mean {" or ".join(map(repr, item.suggestions))}?'
                if item.suggestions else 'no registered name is close; check '
                'the spelling and that the module defining it is imported '
                '(custom_imports)')
        lines.append(f'unknown type {item.name!r} at {where}{item.path}: '
                     f'{hint}')
    return '\n'.join(lines)
