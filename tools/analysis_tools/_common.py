"""Helpers shared by the analysis tools (config loading, data, shapes)."""
import copy
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools.common import check_config_path, import_plugin  # noqa: E402


def load_config(path, cfg_options=None):
    """Check the path, register the plugin and read the config."""
    check_config_path(path)
    import_plugin()
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def load_inference_model(cfg, checkpoint, tool):
    """``build_inference_model(cfg, checkpoint)``; a checkpoint the safe
    loader refuses ends the tool with its message, prefixed by ``tool``."""
    from skd_bnn_mm.deploy import build_inference_model
    from skd_bnn_mm.utils import CheckpointError
    try:
        return build_inference_model(cfg, checkpoint)
    except CheckpointError as e:
        raise SystemExit(f'{tool}: {e}') from None


def _as_hw(value):
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        w, h = value  # mmcv scales are (w, h)
        return h, w
    return None


def guess_input_shape(cfg):
    """``(C, H, W)`` of the images the test pipeline produces.

    Looks for ``CenterCrop``/``RandomResizedCrop``/``RandomCrop``/
    ``PaddedRandomCrop``/``Resize`` in the test (then train) pipeline; CIFAR
    datasets without one give 32x32;
    otherwise 224x224. ``C`` is the backbone's ``in_channels`` (default 3).
    """
    channels = 3
    backbone = cfg.get('model', {}).get('backbone', {}) or {}
    if isinstance(backbone.get('in_channels'), int):
        channels = backbone['in_channels']
    for loader in ('test_dataloader', 'val_dataloader', 'train_dataloader'):
        dataset = (cfg.get(loader) or {}).get('dataset', {}) or {}
        for step in dataset.get('pipeline', []) or []:
            kind = step.get('type', '')
            size = None
            if kind in ('CenterCrop', 'RandomCrop', 'PaddedRandomCrop'):
                size = _as_hw(step.get('crop_size'))
            elif kind in ('RandomResizedCrop', 'Resize'):
                size = _as_hw(step.get('scale'))
            if size is not None:
                return (channels, *size)
        if 'cifar' in str(dataset.get('type', '')).lower():
            return (channels, 32, 32)
    return (channels, 224, 224)


def build_data_loader(cfg, split='test', batch_size=None, num_workers=0):
    """The config's ``{split}_dataloader``, built outside a Runner."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    init_default_scope('mmpretrain')
    key = f'{split}_dataloader'
    if cfg.get(key) is None:
        raise SystemExit(f'The config has no {key}; choose --split among '
                         'train, val, test.')
    loader_cfg = copy.deepcopy(cfg[key])
    if batch_size is not None:
        loader_cfg['batch_size'] = batch_size
    loader_cfg['num_workers'] = num_workers
    loader_cfg['persistent_workers'] = num_workers > 0
    return Runner.build_dataloader(loader_cfg)
