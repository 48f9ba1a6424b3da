"""Build configs read from files only from registered names.

mmengine's ``Registry.get`` does not stop at registered names: a ``type``
with a dot (``'subprocess.Popen'``) is imported as a Python path, and a
scope prefix it does not know (``'pkg.Name'``) or a ``_scope_`` value
imports ``pkg.registry``. That is fine for a config file, which is Python
anyway, but a config that comes out of a data file (the header of a ``.bnn``
file, a checkpoint's meta, a JSON document) would run code. Such configs are
checked here first, without calling ``Registry.get`` on them: every
``type`` must be a name already registered, written plainly (``'ResNet'``,
found in the registry or its parents, as ``get`` looks it up) or with the
prefix of a scope that holds it (``'mmpretrain.ResNet'``), and every
``_scope_`` a scope of the registry tree.
"""
from typing import (Any, Dict, Iterable, List, Optional, Sequence, Set,
                    Tuple)


class UnsafeTypeError(ValueError):
    """A config read from a file names a type that is not registered."""


def _root(registry):
    while registry.parent is not None:
        registry = registry.parent
    return registry


def _tree(registry) -> Iterable:
    stack = [registry]
    while stack:
        reg = stack.pop()
        yield reg
        stack.extend(reg.children.values())


def allowed_names(registries: Sequence
                  ) -> Tuple[Set[str], Dict[str, Set[str]]]:
    """``(plain names, {scope: names})``: the plain names ``get`` finds in
    each registry or its parents, and the names of every scope of their
    trees (for ``'scope.Name'``)."""
    plain: Set[str] = set()
    scoped: Dict[str, Set[str]] = {}
    for registry in registries:
        reg = registry
        while reg is not None:
            plain |= set(reg.module_dict)
            reg = reg.parent
        for reg in _tree(_root(registry)):
            scoped.setdefault(reg.scope, set()).update(reg.module_dict)
    return plain, scoped


def _walk(node: Any, path: str):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f'{path}.{key}' if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f'{path}.{i}' if path else str(i))


def unsafe_types(cfg: Any, registries: Optional[Sequence] = None
                 ) -> List[str]:
    """One line per ``type``/``_scope_`` of ``cfg`` that is not a registered
    name (empty list: every name is safe to build).

    Args:
        cfg: plain dicts and lists, as read from JSON.
        registries: registries whose trees hold the allowed names; default
            mmpretrain's ``MODELS`` and ``WEIGHT_INITIALIZERS`` (a model
            config, its layers and its ``init_cfg``).
    """
    if registries is None:
        from mmpretrain.registry import MODELS, WEIGHT_INITIALIZERS
        registries = (MODELS, WEIGHT_INITIALIZERS)
    plain, scoped = allowed_names(registries)
    problems = []
    for path, node in _walk(cfg, ''):
        where = path or 'the top level'
        if '_scope_' in node and node['_scope_'] not in scoped:
            problems.append(f'_scope_ {node["_scope_"]!r} at {where} is not '
                            f'a registry scope ({", ".join(sorted(scoped))})')
        if 'type' not in node:
            continue
        kind = node['type']
        if not isinstance(kind, str):
            problems.append(f'type at {where} is a {type(kind).__name__}, '
                            'not a registered name')
            continue
        scope, _, name = kind.rpartition('.')
        ok = (name in scoped.get(scope, ())) if scope else (kind in plain)
        if not ok:
            problems.append(f'type {kind!r} at {where} is not a registered '
                            'name')
    return problems


def check_registered_types(cfg: Any, source: str,
                           registries: Optional[Sequence] = None) -> None:
    """Raise :class:`UnsafeTypeError` unless every ``type`` of ``cfg`` (read
    from the file ``source``) is a registered name; nothing is imported or
    built before the check."""
    problems = unsafe_types(cfg, registries)
    if problems:
        raise UnsafeTypeError(
            f'{source}: refused to build the config stored in the file: '
            + '; '.join(problems[:5])
            + ('; ...' if len(problems) > 5 else '')
            + '. A type read from a file is built only from registered '
            'names, never imported from a Python path; nothing was built. '
            'If the file is yours, import the package that registers the '
            'module (e.g. custom_imports) and write the file again.')
