"""Build an inference model from a config and a checkpoint, and freeze it.

Shared by the export tools: :func:`build_inference_model` rebuilds the
classifier of a training config (the SKD-BNN training wrapper becomes a plain
``ImageClassifier``; the soft-label bank is training state), loads a
checkpoint through the project's safe loader, and :func:`to_deploy` swaps
every binary conv for a :class:`PackedBinaryConv2d`.
"""
import copy
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import torch
import torch.nn as nn

from ..models.layers import IRConv2d
from ..models.utils.module_swap import swap_modules
from ..utils.checkpoint import load_checkpoint_file
from .packed_binary_conv import PackedBinaryConv2d

#: classifier types used only for training -> their inference type, and the
#: config keys that only the training type understands
TRAINING_CLASSIFIERS = {
    'SKDImageClassifier': ('ImageClassifier', ('distill', )),
}


def _to_plain(obj: Any) -> Any:
    """ConfigDict / tuples -> plain dicts and lists."""
    if hasattr(obj, 'to_dict'):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _no_pretrained(obj: Any) -> Any:
    """Switch off weight downloads at build time: every weight is loaded
    from the checkpoint or the 1-bit file afterwards."""
    if isinstance(obj, dict):
        out = {k: _no_pretrained(v) for k, v in obj.items()}
        if out.get('pretrained') is True:
            out['pretrained'] = False
        return out
    if isinstance(obj, list):
        return [_no_pretrained(v) for v in obj]
    return obj


def inference_config(cfg) -> Dict[str, Any]:
    """The ``model`` dict that rebuilds the inference network of ``cfg``.

    ``cfg`` is an mmengine ``Config`` (its top-level ``data_preprocessor`` is
    merged in, as the Runner does) or a model dict. Training-only classifier
    types are mapped to their inference type (:data:`TRAINING_CLASSIFIERS`)
    and ``pretrained=True`` flags are cleared. The result is plain
    dicts/lists, JSON-serialisable when the config is.
    """
    if 'model' in cfg and 'type' not in cfg:
        model = copy.deepcopy(_to_plain(cfg['model']))
        if cfg.get('data_preprocessor', None) is not None:
            model.setdefault('data_preprocessor',
                             _to_plain(cfg['data_preprocessor']))
    else:
        model = copy.deepcopy(_to_plain(cfg))
    model_type = model.get('type')
    if model_type in TRAINING_CLASSIFIERS:
        new_type, drop = TRAINING_CLASSIFIERS[model_type]
        model['type'] = new_type
        for key in drop:
            model.pop(key, None)
    return _no_pretrained(model)


def build_model(model_cfg: Dict[str, Any]) -> nn.Module:
    """Build a model dict with mmpretrain's registry (plugin registered)."""
    import skd_bnn_mm.models  # noqa: F401  (registers the plugin)
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(copy.deepcopy(model_cfg))


def _strip_prefix(state: Dict[str, torch.Tensor],
                  prefix: str = 'module.') -> Dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _short(keys: Iterable[str], n: int = 8) -> str:
    keys = list(keys)
    more = f' ... (+{len(keys) - n} more)' if len(keys) > n else ''
    return ', '.join(keys[:n]) + more


def load_weights(model: nn.Module, checkpoint: str,
                 ignore_prefixes: Tuple[str, ...] = ()) -> dict:
    """Load a checkpoint strictly through the safe loader.

    Keys under ``ignore_prefixes`` in the file (training state such as the
    soft-label bank) are dropped; any other missing or unexpected key is an
    error. Returns the checkpoint's ``meta`` (empty dict if none).
    """
    ckpt = load_checkpoint_file(checkpoint, map_location='cpu')
    if not isinstance(ckpt, dict):
        raise ValueError(f'{checkpoint}: expected a dict checkpoint, got '
                         f'{type(ckpt).__name__}')
    state = ckpt.get('state_dict', ckpt)
    state = _strip_prefix(dict(state))
    state = {k: v for k, v in state.items()
             if not any(k.startswith(p) for p in ignore_prefixes)}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(
            f'Checkpoint {checkpoint} does not match the model of the '
            f'config. Missing keys: {_short(missing) or "none"}. Unexpected '
            f'keys: {_short(unexpected) or "none"}. Use the config the '
            'checkpoint was trained with.')
    model.load_state_dict(state, strict=True)
    meta = ckpt.get('meta', {})
    return meta if isinstance(meta, dict) else {}


def build_inference_model(cfg, checkpoint: Optional[str] = None
                          ) -> Tuple[nn.Module, Dict[str, Any], dict]:
    """Build the inference classifier of ``cfg`` and load ``checkpoint``.

    Returns ``(model in eval mode, inference model dict, checkpoint meta)``.
    Checkpoint keys of modules that only the training classifier has (e.g.
    ``soft_label_bank.*``) are ignored.
    """
    model_cfg = inference_config(cfg)
    model = build_model(model_cfg)
    meta: dict = {}
    if checkpoint is not None:
        ignore: Tuple[str, ...] = ()
        src = cfg['model'] if 'model' in cfg and 'type' not in cfg else cfg
        if src.get('type') in TRAINING_CLASSIFIERS:
            ignore = _training_only_prefixes(src)
        meta = load_weights(model, checkpoint, ignore)
    model.eval()
    return model, model_cfg, meta


def _training_only_prefixes(train_cfg) -> Tuple[str, ...]:
    """State-dict prefixes present in the training classifier only."""
    train_model = build_model(_no_pretrained(_to_plain(train_cfg)))
    infer_keys = set(build_model(inference_config(train_cfg)).state_dict())
    prefixes = set()
    for key in train_model.state_dict():
        if key not in infer_keys:
            prefixes.add(key.split('.')[0] + '.')
    return tuple(sorted(prefixes))


def replace_binary_convs(model: nn.Module, factory: Callable[[nn.Module],
                         nn.Module]) -> nn.Module:
    """Replace every :class:`IRConv2d` (shared ones once) by ``factory(conv)``
    in place; returns the model (or the replacement if it is one itself)."""
    return swap_modules(model, lambda name, m: isinstance(m, IRConv2d),
                        lambda name, conv: factory(conv)).model


def to_deploy(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Replace every :class:`IRConv2d` by a :class:`PackedBinaryConv2d`.

    The result computes the same eval-mode outputs bit for bit and drops the
    latent weights and the EDE buffers. Shared modules stay shared.
    """
    if not inplace:
        model = copy.deepcopy(model)
    return replace_binary_convs(model, PackedBinaryConv2d.from_binary_conv)
