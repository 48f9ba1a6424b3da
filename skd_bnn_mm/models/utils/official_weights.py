"""Import the SKD-BNN authors' released weights into this plugin's models.

The authors' trainers save ``{'epoch', 'best_prec1', 'state_dict'}`` from a
``torch.nn.DataParallel`` (every key starts with ``module.``). Each network
here has one :class:`OfficialLayout`: a table of rules that rename one of
their modules to ours (regular expressions on the module path, matched
whole), the recipe whose EDE schedule the weights were trained with, and the
backbone/neck/head that the renamed tensors must fit. One generic function,
:func:`convert_official_state_dict`, applies any table.

The conversion is strict: every source tensor is used exactly once, names,
shapes and dtypes are checked against the target model, and every target
entry is filled except state that the authors' checkpoints do not hold:

- ``ede_k`` / ``ede_t`` of every ``IRConv2d``: their code keeps these as
  plain attributes set from the epoch, so they are recomputed here with
  :func:`~skd_bnn_mm.engine.hooks.ede_hook.ede_schedule` at the checkpoint's
  epoch (during fine-tuning ``EDEHook`` sets them again from the run's epoch);
- ``soft_label_bank.*``: their bank lives outside the checkpoint; it is left
  at its defaults (empty, so the label loss starts after one epoch, as in a
  fresh run).

Example::

    from skd_bnn_mm.models.utils import convert_official_checkpoint
    convert_official_checkpoint('best-checkpoint.th', 'resnet20.pth',
                                'resnet20_cifar10')
"""
import hashlib
import os.path as osp
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

#: prefix that ``torch.nn.DataParallel`` adds to every key
DATA_PARALLEL_PREFIX = 'module.'
#: target entries without a counterpart in the authors' checkpoints
EDE_BUFFERS = ('ede_k', 'ede_t')
BANK_PREFIX = 'soft_label_bank.'
#: entries listed per kind of problem in an error message
_MAX_LISTED = 12


@dataclass(frozen=True)
class OfficialLayout:
    """One network of the authors' code and how it maps onto ours.

    Args:
        name: model name used on the command line.
        source_arch: the authors' model function.
        rules: ``(source module regex, target module template)`` pairs;
            the regex must match the whole module path (key without
            ``module.`` and without the last ``.param``), the template may
            use its groups (``\\1``).
        model: backbone / neck / head configs of our matching model.
        max_epochs: epochs of the authors' recipe (EDE schedule).
        t_min, t_max: EDE temperature range of the recipe.
    """

    name: str
    source_arch: str
    rules: Tuple[Tuple[str, str], ...]
    model: dict
    max_epochs: int
    t_min: float = 1e-3
    t_max: float = 10.0

    @property
    def num_classes(self) -> int:
        return self.model['head']['num_classes']


def _head(channels: int, num_classes: int) -> dict:
    return dict(type='LinearClsHead', num_classes=num_classes,
                in_channels=channels)


def _avg_neck(channels: int) -> dict:
    return dict(type='PoolBNNeck', in_channels=channels, pool='avg',
                norm=True)


_RESNET_UNITS = (r'layer(\d+)\.(\d+)\.(conv|bn)([12])',
                 r'backbone.layer\1.\2.\3\4')

OFFICIAL_LAYOUTS: Dict[str, OfficialLayout] = {
    layout.name: layout
    for layout in (
        OfficialLayout(
            name='resnet20_cifar10',
            source_arch='resnet20_1w1a',
            rules=(
                (r'conv1', 'backbone.stem_conv'),
                (r'bn1', 'backbone.stem_bn'),
                _RESNET_UNITS,
                (r'bn2', 'neck.bn'),  # BatchNorm1d after the global pool
                (r'linear', 'head.fc'),
            ),
            model=dict(backbone=dict(type='BNNResNet20CIFAR'),
                       neck=_avg_neck(64), head=_head(64, 10)),
            max_epochs=700),
        OfficialLayout(
            name='vgg-small_cifar10',
            source_arch='vgg_small_1w1a',
            rules=(
                (r'conv0', 'backbone.stem_conv'),
                (r'bn0', 'backbone.stem_bn'),
                (r'conv([1-5])', r'backbone.unit\1.conv'),
                (r'bn([1-5])', r'backbone.unit\1.bn'),
                (r'fc', 'head.fc'),
            ),
            model=dict(backbone=dict(type='BNNVGGSmall'),
                       neck=dict(type='PoolBNNeck', in_channels=8192,
                                 pool='flatten', norm=False),
                       head=_head(8192, 10)),
            max_epochs=600),
        OfficialLayout(
            name='resnet18_cifar10',
            source_arch='ResNet18',
            rules=(
                (r'conv1', 'backbone.stem_conv'),
                (r'bn1', 'backbone.stem_bn'),
                _RESNET_UNITS,
                # full-precision 1x1 conv + BN of the downsample shortcut
                (r'layer(\d+)\.(\d+)\.shortcut\.([01])',
                 r'backbone.layer\1.\2.downsample.\3'),
                (r'bn2', 'neck.bn'),
                (r'linear', 'head.fc'),
            ),
            model=dict(backbone=dict(type='BNNResNet18CIFAR'),
                       neck=_avg_neck(512), head=_head(512, 10)),
            max_epochs=800),
        OfficialLayout(
            name='resnet18_imagenet',
            source_arch='resnet18',
            rules=(
                (r'conv1', 'backbone.stem_conv'),
                (r'bn1', 'backbone.stem_bn'),
                _RESNET_UNITS,
                (r'layer(\d+)\.(\d+)\.downsample\.([01])',
                 r'backbone.layer\1.\2.downsample.\3'),
                (r'bn2', 'neck.bn'),
                (r'fc', 'head.fc'),
            ),
            # their downsample is conv + BN (no average pool): avg_down=False
            model=dict(backbone=dict(type='BNNResNet18', avg_down=False),
                       neck=_avg_neck(512), head=_head(512, 1000)),
            max_epochs=128),
    )
}

#: sha256 of the released checkpoints (file name in the authors' repository)
KNOWN_RELEASES = {
    '173c09c6731d3a82e7bb5608b8f8a3ae8bde09fc1c57e7d4146c6cd694fa1a4f':
    ('resnet20_cifar10', 'CIFAR-10/ResNet20/saveModel-000/best-checkpoint.th'),
}


def get_layout(model_name: str) -> OfficialLayout:
    try:
        return OFFICIAL_LAYOUTS[model_name]
    except KeyError:
        raise ValueError(
            f'Unknown model {model_name!r}; the authors\' networks are: '
            f'{", ".join(OFFICIAL_LAYOUTS)}.') from None


def build_reference_model(model_name: str,
                          device: Union[str, torch.device] = 'cpu'
                          ) -> nn.Module:
    """Backbone, neck and head of our model for ``model_name`` (keys
    ``backbone.*``, ``neck.*``, ``head.*``, as in an ``ImageClassifier``),
    without the soft-label bank. ``device='meta'`` gives names, shapes and
    dtypes without allocating or initialising anything."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    layout = get_layout(model_name)
    with torch.device(device), \
            DefaultScope.overwrite_default_scope('mmpretrain'):
        return nn.ModuleDict({part: MODELS.build(dict(cfg))
                              for part, cfg in layout.model.items()})


def _reference_entries(reference) -> 'OrderedDict[str, torch.Tensor]':
    if isinstance(reference, nn.Module):
        return reference.state_dict()
    return OrderedDict(reference)


def _strip_prefix(state_dict: Mapping) -> 'OrderedDict[str, torch.Tensor]':
    keys = list(state_dict)
    if keys and all(k.startswith(DATA_PARALLEL_PREFIX) for k in keys):
        n = len(DATA_PARALLEL_PREFIX)
        return OrderedDict((k[n:], v) for k, v in state_dict.items())
    return OrderedDict(state_dict)


def _map_key(layout: OfficialLayout, key: str) -> Optional[str]:
    module, _, param = key.rpartition('.')
    for pattern, template in layout.rules:
        m = re.fullmatch(pattern, module)
        if m:
            return f'{m.expand(template)}.{param}'
    return None


def _is_ede(key: str) -> bool:
    return key.rpartition('.')[2] in EDE_BUFFERS


def _fmt(shape) -> str:
    return str(list(shape))


def _try_convert(src: 'OrderedDict[str, torch.Tensor]',
                 layout: OfficialLayout, reference: Mapping,
                 epoch: Optional[int]):
    """``(converted, problems)``; ``problems`` lists what did not fit."""
    problems: List[str] = []
    for key, value in src.items():
        if not isinstance(value, torch.Tensor):
            problems.append(f'source entry {key!r} is a '
                            f'{type(value).__name__}, not a tensor')
    if problems:
        return None, problems

    mapped: Dict[str, torch.Tensor] = {}
    origin: Dict[str, str] = {}
    unmapped, extra, mismatched = [], [], []
    for key, value in src.items():
        dst = _map_key(layout, key)
        if dst is None:
            unmapped.append(f'{key} {_fmt(value.shape)}')
            continue
        if dst in origin:
            mismatched.append(f'{key} and {origin[dst]} both map to {dst}')
            continue
        if dst not in reference:
            extra.append(f'{key} {_fmt(value.shape)} -> {dst} (not in the '
                         'target model)')
            continue
        ref = reference[dst]
        if tuple(value.shape) != tuple(ref.shape) or value.dtype != ref.dtype:
            mismatched.append(
                f'{key} {_fmt(value.shape)} {value.dtype} -> {dst} expects '
                f'{_fmt(ref.shape)} {ref.dtype}')
            continue
        origin[dst] = key
        mapped[dst] = value

    k = t = None
    if epoch is not None or any(_is_ede(n) for n in reference):
        from skd_bnn_mm.engine.hooks.ede_hook import ede_schedule
        e = layout.max_epochs - 1 if epoch is None else int(epoch)
        k, t = ede_schedule(e, layout.max_epochs, layout.t_min, layout.t_max)

    converted: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    missing = []
    for name, ref in reference.items():
        if name in mapped:
            # own, contiguous CPU copies: the source may share storages
            converted[name] = mapped[name].detach().to(
                'cpu', copy=True).contiguous()
        elif _is_ede(name) and name.rpartition('.')[0] + '.weight' in mapped:
            value = k if name.endswith('ede_k') else t
            converted[name] = torch.full_like(ref, value, device='cpu')
        elif name.startswith(BANK_PREFIX):
            converted[name] = ref.detach().to('cpu', copy=True)
        elif not _is_ede(name):  # (an unfilled conv weight is listed)
            missing.append(f'{name} {_fmt(ref.shape)}')

    for title, items in (('source keys that match no rule', unmapped),
                         ('source keys without a target', extra),
                         ('shape/dtype mismatches', mismatched),
                         ('target entries not filled by the source',
                          missing)):
        if items:
            shown = '; '.join(items[:_MAX_LISTED])
            more = len(items) - _MAX_LISTED
            problems.append(f'{title} ({len(items)}): {shown}' +
                            (f'; ... and {more} more' if more > 0 else ''))
    if problems:
        return None, problems
    return converted, {'ede_k': k, 'ede_t': t}


def _guess_layouts(src, exclude: str) -> List[str]:
    """Names of the other layouts that ``src`` converts into cleanly."""
    fits = []
    for name in OFFICIAL_LAYOUTS:
        if name == exclude:
            continue
        ref = build_reference_model(name, 'meta').state_dict()
        if _try_convert(src, OFFICIAL_LAYOUTS[name], ref, None)[0] is not None:
            fits.append(name)
    return fits


def convert_official_state_dict(
        src_state_dict: Mapping[str, torch.Tensor],
        model_name: str,
        epoch: Optional[int] = None,
        model: Optional[Union[nn.Module, Mapping]] = None,
        soft_label_bank: bool = True) -> 'OrderedDict[str, torch.Tensor]':
    """Rename the authors' ``state_dict`` to this plugin's keys, strictly.

    Args:
        src_state_dict: the authors' ``state_dict`` (with or without the
            ``module.`` prefix of DataParallel).
        model_name: one of :data:`OFFICIAL_LAYOUTS`.
        epoch: the checkpoint's (0-based) epoch, which sets the EDE buffers
            from the recipe's schedule; ``None``: the recipe's last epoch.
        model: the target (a module or its ``state_dict``) whose keys,
            shapes and dtypes the result must match; by default our model
            of that network (:func:`build_reference_model`), plus a
            soft-label bank when ``soft_label_bank`` is True (the layout of
            the ``SKDImageClassifier`` configs).
        soft_label_bank: add the bank's default entries to the default
            target (ignored when ``model`` is given: its own bank, if any,
            is used).

    Returns:
        An ``OrderedDict`` in the target's order that
        ``target.load_state_dict(..., strict=True)`` accepts.

    Raises:
        ValueError: listing the source keys that match no rule or no
            target entry, shape/dtype mismatches, and the target entries
            left unfilled (with the networks the source would fit instead).
    """
    layout = get_layout(model_name)
    if not isinstance(src_state_dict, Mapping):
        raise ValueError(f'Expected a state_dict (a mapping of tensors), got '
                         f'{type(src_state_dict).__name__}.')
    if 'state_dict' in src_state_dict and isinstance(
            src_state_dict['state_dict'], Mapping):
        raise ValueError('Got a whole checkpoint: pass its "state_dict" '
                         'entry, or use convert_official_checkpoint().')
    src = _strip_prefix(src_state_dict)
    if model is None:
        reference = build_reference_model(model_name, 'meta').state_dict()
        if soft_label_bank:
            from skd_bnn_mm.models.distill import SoftLabelBank
            bank = SoftLabelBank(layout.num_classes).state_dict()
            reference.update(
                (BANK_PREFIX + k, v) for k, v in bank.items())
    else:
        reference = _reference_entries(model)
    converted, info = _try_convert(src, layout, reference, epoch)
    if converted is None:
        fits = _guess_layouts(src, model_name)
        if fits:
            hint = (f'It is a {" or ".join(fits)} checkpoint: convert it as '
                    f'that model (--model {fits[0]}).')
        else:
            hint = ('Check that it is one of the authors\' checkpoints of '
                    f'{", ".join(OFFICIAL_LAYOUTS)}, complete and unchanged, '
                    'and that --model (and --config) name its network.')
        raise ValueError(
            f'The checkpoint does not fit the authors\' {model_name} '
            f'({layout.source_arch}) layout. {hint}\n- ' + '\n- '.join(info))
    return converted


def sha256sum(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


def _as_number(value):
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else None
    return value if isinstance(value, (int, float)) else None


def load_official_checkpoint(src_path: str) -> Tuple[dict, dict]:
    """Read one of the authors' files: ``(state_dict, info)``.

    ``weights_only=True`` on the CPU (their files hold CUDA storages); a
    bare ``state_dict`` is accepted too. ``info`` holds ``epoch`` and
    ``best_prec1`` when present, as plain numbers.
    """
    from skd_bnn_mm.utils import CheckpointError, load_checkpoint_file
    if not osp.isfile(src_path):
        raise ValueError(f'Source checkpoint "{src_path}" does not exist.')
    try:
        obj = load_checkpoint_file(src_path, map_location='cpu')
    except CheckpointError as e:
        raise ValueError(
            f'Cannot read the source checkpoint "{src_path}" (loaded with '
            f'weights_only=True): {e}\nIf it is truncated, download it '
            'again and compare its sha256 with the published one.') from None
    if not isinstance(obj, Mapping):
        raise ValueError(f'"{src_path}" holds a {type(obj).__name__}, not a '
                         'checkpoint dict or a state_dict.')
    info = {}
    if isinstance(obj.get('state_dict'), Mapping):
        state_dict = obj['state_dict']
        for key in ('epoch', 'best_prec1'):
            if key in obj:
                info[key] = _as_number(obj[key])
    else:
        state_dict = obj
    return state_dict, info


def _build_config_model(config):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    model_cfg = cfg.model.copy()
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmpretrain')):
        return MODELS.build(model_cfg)


def convert_official_checkpoint(src_path: str, dst_path: str,
                                model_name: str,
                                config=None) -> dict:
    """Convert one of the authors' checkpoint files to an mmengine one.

    Writes ``{'state_dict', 'meta'}`` atomically to ``dst_path`` (nothing is
    written on any error). ``meta['epoch']`` counts the epochs trained
    (mmengine's convention: the authors' 0-based ``epoch`` + 1);
    ``meta['official']`` records the source file (name, sha256, size), its
    stored ``epoch`` and ``best_prec1``, the EDE ``k, t`` written and what
    was left at its defaults.

    Args:
        src_path: the authors' file (e.g. ``best-checkpoint.th``).
        dst_path: output checkpoint, for ``load_from`` / ``tools/test.py``.
        model_name: one of :data:`OFFICIAL_LAYOUTS`.
        config: optional config (path or ``Config``): the result is made for
            the model it builds (e.g. an IR-Net config, which has no bank)
            and checked with ``load_state_dict(strict=True)``.

    Returns:
        The ``meta`` written.
    """
    layout = get_layout(model_name)
    if osp.isfile(src_path) and osp.exists(dst_path) and osp.samefile(
            src_path, dst_path):
        raise ValueError(f'The output "{dst_path}" is the source file; '
                         'choose another output path.')
    state_dict, info = load_official_checkpoint(src_path)
    epoch = info.get('epoch')
    target = _build_config_model(config) if config is not None else None
    converted = convert_official_state_dict(state_dict, model_name,
                                            epoch=epoch, model=target)
    if target is not None:
        try:
            target.load_state_dict(converted, strict=True)
        except RuntimeError as e:
            raise ValueError(f'The converted weights do not load strictly '
                             f'into the model of {config}: {e}') from None

    digest = sha256sum(src_path)
    ede = {}
    names = [n for n in converted if n.endswith('.ede_t')]
    if names:
        ede = dict(k=float(converted[names[0][:-1] + 'k']),
                   t=float(converted[names[0]]),
                   epoch=layout.max_epochs - 1 if epoch is None else epoch,
                   max_epochs=layout.max_epochs, t_min=layout.t_min,
                   t_max=layout.t_max, layers=len(names))
    release = KNOWN_RELEASES.get(digest)
    official = dict(
        model=model_name,
        source_arch=layout.source_arch,
        source_file=osp.basename(src_path),
        sha256=digest,
        size=osp.getsize(src_path),
        released_file=release[1] if release and release[0] == model_name
        else None,
        epoch=epoch,
        best_prec1=info.get('best_prec1'),
        tensors=len(state_dict),
        ede=ede,
        defaults=('soft_label_bank (empty: not in the authors\' checkpoints)'
                  if any(n.startswith(BANK_PREFIX) for n in converted)
                  else None),
        config=config if isinstance(config, str) else getattr(
            config, 'filename', None),
    )
    meta = dict(official=official)
    if epoch is not None:
        meta['epoch'] = int(epoch) + 1

    from skd_bnn_mm.utils import atomic_torch_save
    folder = osp.dirname(osp.abspath(dst_path))
    if not osp.isdir(folder):
        raise ValueError(f'Output folder "{folder}" does not exist.')
    atomic_torch_save(dict(state_dict=converted, meta=meta), dst_path)
    return meta
