"""The ``.bnn`` file: a binary network with 1 bit per binary weight.

A ``.bnn`` file is a safetensors file
(https://github.com/huggingface/safetensors): an 8-byte little-endian header
length, a JSON header (name, dtype, shape and byte range of every tensor,
plus string metadata), then the raw little-endian tensor bytes. Nothing is
pickled, and the model config of the header is built only from registered
type names (:func:`skd_bnn_mm.utils.check_registered_types`; mmengine's
registry would import a dotted ``type`` such as ``'subprocess.Popen'``), so
reading it cannot run code. It holds

- one tensor per entry of the deployed model's state_dict. For a binary conv
  ``name`` these are ``name.packed`` (uint8 sign bits, 1 bit per weight) and
  ``name.exponent`` (int8 power-of-two exponents), see
  :mod:`skd_bnn_mm.deploy.packed_binary_conv`; every other tensor (stem,
  shortcuts, BN parameters and running statistics, head) is stored as it is,
  in full precision. BN layers are kept separate, not folded into convs, so
  the rebuilt network computes exactly what the trained one did;
- the metadata entry ``skd_bnn_mm``: a JSON document with the format name
  and version, the model config that rebuilds the network, the names of the
  binary convs, the bit layout and free-form ``meta`` (class names, source
  checkpoint).

Any safetensors reader (Python, Rust, C++) can read the arrays;
:func:`load_1bit` rebuilds the PyTorch module.
"""
import json
import os.path as osp
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from ..utils.safe_types import UnsafeTypeError, check_registered_types
from .convert import build_model, replace_binary_convs, to_deploy
from .packed_binary_conv import ZERO_SCALE_EXPONENT, PackedBinaryConv2d

FORMAT_NAME = 'skd_bnn_mm.bnn'
FORMAT_VERSION = 1
#: safetensors metadata key holding the JSON header
METADATA_KEY = 'skd_bnn_mm'


class BNNFormatError(ValueError):
    """A file that is not a valid ``.bnn`` file."""


def save_1bit(model: nn.Module, path: str, model_cfg: Dict[str, Any],
              meta: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write ``model`` (trained, with :class:`IRConv2d` layers or already
    converted by :func:`to_deploy`) to ``path``.

    Args:
        model: the network; it is not modified.
        path: output file.
        model_cfg: JSON-serialisable config that builds the same network
            (e.g. :func:`~skd_bnn_mm.deploy.inference_config`).
        meta: extra JSON-serialisable information (class names, source).

    Returns:
        The JSON header written.
    """
    from safetensors.torch import save_file
    deployed = to_deploy(model)
    binary = {n: m for n, m in deployed.named_modules()
              if isinstance(m, PackedBinaryConv2d)}
    header = dict(
        format=FORMAT_NAME,
        version=FORMAT_VERSION,
        model=model_cfg,
        binary_convs={
            n: dict(weight_shape=list(m.weight_shape),
                    packed=f'{n}.packed', exponent=f'{n}.exponent',
                    bias=(f'{n}.bias' if m.bias is not None else None))
            for n, m in binary.items()},
        bit_order='big',
        bit_one='+1',
        zero_scale_exponent=ZERO_SCALE_EXPONENT,
        meta=meta or {})
    try:
        text = json.dumps(header)
    except TypeError as e:
        raise TypeError(f'model_cfg/meta must be JSON-serialisable for the '
                        f'.bnn header: {e}') from None
    # clone: safetensors refuses tensors that share memory (shared modules)
    tensors = {k: v.detach().cpu().contiguous().clone()
               for k, v in deployed.state_dict().items()}
    save_file(tensors, path, metadata={METADATA_KEY: text})
    return header


def read_1bit(path: str) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """Read a ``.bnn`` file: ``(header, {state_dict key: tensor})``.

    Only the safetensors layout is parsed (no pickle); anything else, and a
    model config naming a type that is not registered, is refused with
    :class:`BNNFormatError`.
    """
    from safetensors import SafetensorError, safe_open
    if not osp.isfile(path):
        raise FileNotFoundError(f'1-bit model file "{path}" does not exist')
    try:
        with safe_open(path, framework='pt') as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise BNNFormatError(
            f'"{path}" is not a .bnn (safetensors) file ({e}); write one with '
            'tools/analysis_tools/export_1bit.py') from None
    if METADATA_KEY not in metadata:
        raise BNNFormatError(f'"{path}" is a safetensors file without the '
                             f'"{METADATA_KEY}" header: not a .bnn file')
    try:
        header = json.loads(metadata[METADATA_KEY])
    except ValueError as e:
        raise BNNFormatError(f'"{path}": corrupt header ({e})') from None
    if header.get('format') != FORMAT_NAME:
        raise BNNFormatError(f'"{path}": format {header.get("format")!r} is '
                             f'not {FORMAT_NAME!r}')
    if header.get('version') != FORMAT_VERSION:
        raise BNNFormatError(
            f'"{path}": format version {header.get("version")} is not '
            f'supported (this reader knows version {FORMAT_VERSION}); '
            'update skd_bnn_mm or re-export the model')
    if not isinstance(header.get('model'), dict):
        raise BNNFormatError(f'"{path}": the header has no model config')
    try:
        check_registered_types(header['model'], f'"{path}"')
    except UnsafeTypeError as e:
        raise BNNFormatError(str(e)) from None
    for name, rec in header.get('binary_convs', {}).items():
        for key in (rec['packed'], rec['exponent']):
            if key not in tensors:
                raise BNNFormatError(f'"{path}": tensor {key} of binary conv '
                                     f'{name} is missing')
    return header, tensors


def load_1bit(path: str, device: str = 'cpu') -> nn.Module:
    """Rebuild the inference network stored in a ``.bnn`` file.

    The model is built from the stored config, its binary convs are replaced
    by :class:`PackedBinaryConv2d` and every tensor is loaded strictly. The
    returned module is in eval mode; its outputs equal those of the exported
    model in eval mode.
    """
    header, arrays = read_1bit(path)
    model = build_model(header['model'])
    stored = set(header.get('binary_convs', {}))
    model = replace_binary_convs(model, PackedBinaryConv2d.like)
    built = {n for n, m in model.named_modules()
             if isinstance(m, PackedBinaryConv2d)}
    if built != stored:
        raise BNNFormatError(
            f'"{path}": the stored config builds binary convs '
            f'{sorted(built - stored)[:5]} not in the file, or the file has '
            f'{sorted(stored - built)[:5]} that the config does not build')
    missing, unexpected = model.load_state_dict(arrays, strict=False)
    if missing or unexpected:
        raise BNNFormatError(
            f'"{path}": tensors do not match the stored config (missing '
            f'{missing[:5]}, unexpected {unexpected[:5]})')
    model.to(device)
    model.eval()
    return model
