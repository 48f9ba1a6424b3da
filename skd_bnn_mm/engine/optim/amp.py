"""The one place that turns an AMP choice into an ``optim_wrapper`` config.

``tools/train.py --amp [fp16|bf16]``, the benchmark tool's ``--amp`` and
:mod:`skd_bnn_mm.engine.fast` all call :func:`amp_optim_wrapper_cfg`.
"""
import copy
from typing import Optional

#: values of ``--amp``; ``'auto'`` is a bare ``tools/train.py --amp``
AMP_CHOICES = ('none', 'bf16', 'fp16')
AMP_MODES = AMP_CHOICES + ('auto', )

#: devices on which mmengine's ``AmpOptimWrapper`` runs (it asserts one)
AMP_OPTIM_WRAPPER_DEVICES = ('cuda', 'npu', 'mlu', 'musa')

_WRAPPERS = ('OptimWrapper', 'AmpOptimWrapper', 'AutocastOptimWrapper')
_FP16 = ('float16', 'fp16', 'half')
_BF16 = ('bfloat16', 'bf16')


def _dtype_name(dtype) -> Optional[str]:
    """'float16', 'bfloat16' or None (unset / float32) for a config dtype
    (a string or a ``torch.dtype``)."""
    if dtype is None:
        return None
    name = str(dtype).replace('torch.', '')
    if name in _FP16:
        return 'float16'
    if name in _BF16:
        return 'bfloat16'
    return None


def config_amp(optim_wrapper: dict) -> str:
    """The AMP mode an ``optim_wrapper`` config trains with: ``'none'``,
    ``'bf16'`` or ``'fp16'`` (``AmpOptimWrapper`` without a dtype autocasts
    to fp16 on CUDA; ``AutocastOptimWrapper`` defaults to bf16). Unknown
    wrapper types count as ``'none'``."""
    kind = optim_wrapper.get('type', 'OptimWrapper')
    dtype = _dtype_name(optim_wrapper.get('dtype', None))
    if kind == 'AmpOptimWrapper':
        return 'bf16' if dtype == 'bfloat16' else 'fp16'
    if kind == 'AutocastOptimWrapper':
        return 'fp16' if dtype == 'float16' else 'bf16'
    return 'none'


def default_amp(device: str) -> str:
    """What a bare ``--amp`` picks: fp16 where mmengine's
    ``AmpOptimWrapper`` runs (as mmpretrain's ``--amp``), else bf16 (no
    loss scaling needed, and on CPUs with AVX512-BF16 the fast one)."""
    return 'fp16' if device in AMP_OPTIM_WRAPPER_DEVICES else 'bf16'


def amp_optim_wrapper_cfg(optim_wrapper: dict, amp: str,
                          device: str) -> dict:
    """``optim_wrapper`` config that trains with ``amp`` on ``device``.

    - ``'none'``: float32; an ``AmpOptimWrapper`` / ``AutocastOptimWrapper``
      becomes a plain ``OptimWrapper``, anything else is unchanged.
    - ``'bf16'`` / ``'fp16'``: on CUDA (and NPU/MLU/MUSA) mmengine's
      ``AmpOptimWrapper`` with that dtype; elsewhere (CPU)
      :class:`~skd_bnn_mm.engine.optim.AutocastOptimWrapper`, which for fp16
      scales the loss with ``torch.amp.GradScaler`` exactly as
      ``AmpOptimWrapper`` does on CUDA. A ``loss_scale`` of the config is
      kept for fp16 (default ``'dynamic'``).
    - ``'auto'`` (bare ``--amp``): an ``AutocastOptimWrapper`` config is
      kept as it is; a config that names a ``dtype`` (e.g.
      ``--cfg-options optim_wrapper.dtype=bfloat16``) keeps it; otherwise
      :func:`default_amp` (fp16 on CUDA, bf16 on CPU).

    Only plain ``OptimWrapper`` / ``AmpOptimWrapper`` /
    ``AutocastOptimWrapper`` configs can be converted (ValueError else).
    """
    if amp not in AMP_MODES:
        raise ValueError(f'Unknown amp {amp!r}; choose one of '
                         f'{", ".join(AMP_MODES)}')
    cfg = copy.deepcopy(dict(optim_wrapper))
    kind = cfg.get('type', 'OptimWrapper')
    if amp == 'none' and kind not in _WRAPPERS[1:]:
        return cfg
    if kind not in _WRAPPERS:
        raise ValueError(
            f'Cannot add autocast to optim_wrapper type {kind!r}; use one of '
            f'{", ".join(_WRAPPERS)}, or set the mixed-precision options of '
            'that wrapper in the config instead.')
    if amp == 'auto':
        if kind == 'AutocastOptimWrapper':
            return cfg
        named = _dtype_name(cfg.get('dtype', None))
        amp = ({'float16': 'fp16', 'bfloat16': 'bf16'}[named] if named
               else default_amp(device))
    loss_scale = cfg.pop('loss_scale', None)
    for key in ('dtype', 'device_type', 'use_fsdp'):
        cfg.pop(key, None)
    if amp == 'none':
        cfg['type'] = 'OptimWrapper'
        return cfg
    dtype = 'float16' if amp == 'fp16' else 'bfloat16'
    if device in AMP_OPTIM_WRAPPER_DEVICES:
        cfg.update(type='AmpOptimWrapper', dtype=dtype,
                   loss_scale=loss_scale or 'dynamic')
    else:
        cfg.update(type='AutocastOptimWrapper', dtype=dtype)
        if amp == 'fp16':
            cfg['loss_scale'] = loss_scale or 'dynamic'
    return cfg
