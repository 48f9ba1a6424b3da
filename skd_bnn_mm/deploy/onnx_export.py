"""ONNX export of a binary classifier, checked against PyTorch.

Each binary conv becomes, in the graph,
``Conv(Where(GreaterOrEqual(x, 0), 1, -1), W)`` where ``W`` is a constant
initializer holding exactly ``±2**e`` per output channel (the packed signs
times the power-of-two scale). ``Where(x >= 0, 1, -1)`` is the project's sign:
0 maps to +1 and NaN to -1. ONNX has no 1-bit tensor type, so ``W`` is a
float32 constant; a runtime with binary kernels can recover the bits from
its signs. Everything else (stem, BN, shortcuts, pooling, head) is exported
by PyTorch's TorchScript-based exporter as usual. BN layers stay separate
``BatchNormalization`` nodes (inference mode, running statistics): folding a
BN into the binary conv before it would make its weights arbitrary reals, so
the exporter's Conv+BN fusion is not used, for any conv.

The graph input is the *preprocessed* image batch (what the model's
``data_preprocessor`` produces: normalised, channels in the model's order);
the normalisation is written to the model's metadata
(``mean``/``std``/``to_rgb``). The output is the logits. onnx and
onnxruntime are imported only when used.
"""
import json
import warnings
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..models.utils.tensor_forward import tensor_forward
from .convert import to_deploy


class LogitsModel(nn.Module):
    """``inputs -> logits`` of an mmpretrain classifier (``mode='tensor'``),
    or the plain output of any other module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = tensor_forward(self.model, x)
        if isinstance(out, (tuple, list)):
            out = out[-1]
        return out


def _device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device('cpu')


def _preprocess_meta(model: nn.Module) -> Dict[str, str]:
    pre = getattr(model, 'data_preprocessor', None)
    meta = {}
    for key in ('mean', 'std'):
        value = getattr(pre, key, None)
        if isinstance(value, torch.Tensor):
            meta[key] = json.dumps([round(float(v), 6)
                                    for v in value.reshape(-1)])
    for key in ('to_rgb', '_channel_conversion'):
        if hasattr(pre, key):
            meta['to_rgb'] = json.dumps(bool(getattr(pre, key)))
            break
    return meta


def export_onnx(model: nn.Module,
                path: str,
                input_shape: Sequence[int] = (3, 32, 32),
                opset: int = 17,
                dynamic_batch: bool = True,
                metadata: Optional[Dict[str, str]] = None) -> nn.Module:
    """Export ``model`` (eval mode; its binary convs are frozen first).

    Args:
        model: a classifier with :class:`IRConv2d` layers (or already
            converted by :func:`to_deploy`). Not modified.
        path: output ``.onnx`` file.
        input_shape: ``(C, H, W)`` of one preprocessed image.
        opset: ONNX opset (>= 12 for ``GreaterOrEqual``).
        dynamic_batch: make the batch axis dynamic.
        metadata: extra ``metadata_props`` entries.

    Returns:
        The deployed PyTorch module that was exported (``LogitsModel``), to
        compare outputs against.
    """
    import onnx
    if opset < 12:
        raise ValueError(f'opset {opset} lacks GreaterOrEqual; use >= 12')
    wrapped = LogitsModel(to_deploy(model)).eval()
    dummy = torch.zeros(1, *input_shape, device=_device(wrapped))
    dynamic_axes = ({'input': {0: 'batch'}, 'logits': {0: 'batch'}}
                    if dynamic_batch else None)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        # dynamo=False: the TorchScript exporter needs no onnxscript.
        # PRESERVE (the module is in eval mode) skips the exporter's eval
        # peephole pass, which would fold each BN into the conv before it
        # and so turn the binary weights ±2**e into arbitrary reals.
        torch.onnx.export(
            wrapped, (dummy, ), path, input_names=['input'],
            output_names=['logits'], opset_version=opset,
            dynamic_axes=dynamic_axes, do_constant_folding=True,
            training=torch.onnx.TrainingMode.PRESERVE, dynamo=False)
    proto = onnx.load(path)
    props = dict(_preprocess_meta(model))
    props.update({'producer': 'skd_bnn_mm',
                  'binary_sign': 'Where(GreaterOrEqual(x, 0), 1, -1)'})
    props.update(metadata or {})
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    return wrapped


def run_onnx(path: str, inputs: torch.Tensor,
             optimize: bool = False) -> np.ndarray:
    """Run the exported model with onnxruntime on CPU.

    ``optimize=False`` switches the runtime's graph optimizations off, so
    the graph runs exactly as exported. With them on, onnxruntime fuses each
    BN into the conv before it; that changes rounding, and a binary conv
    output that is an exact tie (an integer sum of +-1, e.g. 0) may then
    land a few ulp on the other side of a following sign. This matters for
    untrained networks whose BN is still the identity, hardly for trained
    ones.
    """
    import onnxruntime as ort
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = \
            ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, options,
                                providers=['CPUExecutionProvider'])
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: inputs.detach().cpu().numpy()})[0]


def verify_onnx(path: str, reference: nn.Module, inputs: torch.Tensor,
                optimize: bool = False) -> float:
    """Max absolute difference between onnxruntime (see :func:`run_onnx`
    for ``optimize``) and ``reference``'s eval-mode logits on ``inputs``."""
    was_training = reference.training
    reference.eval()
    with torch.no_grad():
        ref = LogitsModel(reference)(inputs.to(_device(reference)))
    reference.train(was_training)
    out = run_onnx(path, inputs, optimize)
    return float(np.abs(out - ref.cpu().numpy()).max())
