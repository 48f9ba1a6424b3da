"""OpenVINO export: binary convs run as ``BinaryConvolution`` on x86 CPUs.

The deployed network (:func:`~skd_bnn_mm.deploy.to_deploy`) is converted
with ``openvino.convert_model``; every binary conv then appears in the IR as
``Convolution(Select(GreaterEqual(x, 0), 1, -1), W)``, ``W`` holding one
magnitude per output channel (``2**e``, times the BN scale when OpenVINO's
conversion has folded the BN into the conv). :func:`binarize_ir` rewrites
each such pattern into

``FakeQuantize(x, t, t, 0, 1, levels=2) -> BinaryConvolution(u1 signs)
-> Multiply(per-channel magnitude)``

- ``BinaryConvolution`` (mode ``xnor-popcount``, ``pad_value=0``) gives the
  integer sum of the +-1 products, with the padded border contributing 0:
  the zero padding of training. The CPU plugin reads its ``u1`` weights
  packed 8 per byte, first weight in the least significant bit.
- The 2-level ``FakeQuantize`` binarises the activations; the CPU plugin
  fuses it with the op before it (or runs it as a packing kernel) and
  passes packed bits to the binary conv. It maps ``x > t`` to 1 and
  everything else to 0; its threshold ``t`` is the negative of the smallest
  float32 denormal (:data:`ACTIVATION_THRESHOLD`), so ``x >= 0`` (0 and -0
  included) gives +1 and every negative float gives -1, as the training
  sign does. That needs denormals kept (``CPU_DENORMALS_OPTIMIZATION`` off,
  the default, set explicitly by :func:`compile_openvino`). A NaN input is
  the one case that differs: OpenVINO binarises it to +1, PyTorch to -1.
- The per-channel magnitude is a ``Multiply`` after the conv, which the
  plugin fuses into the conv as a post-op together with the BN shift, the
  shortcut addition and the Hardtanh.

The plugin's binary kernel is only correct when the input channels of a conv
are a multiple of 8 (measured: other counts give wrong sums or fail to
compile), and the op has no groups; such convs stay float ``Convolution``s on
the +-1 map, which is exact too. ``--float`` (``binary=False``) keeps every
binary conv a float ``Convolution``: the same network, the honest baseline.

The IR's input is the *preprocessed* batch, as for the ONNX export; its
output is the logits. The normalisation goes into the IR's ``rt_info``.
Compile it with ``INFERENCE_PRECISION_HINT=f32``: on CPUs with bf16 units
the plugin otherwise runs the float layers in bf16, which is not float
rounding any more. ``openvino`` is imported only inside these functions.
"""
import json
import warnings
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from .convert import to_deploy
from .onnx_export import LogitsModel, _device, _preprocess_meta

#: FakeQuantize threshold: ``x > -2**-149`` is ``x >= 0`` for every
#: non-NaN float32 (sign(0) = +1), when denormals are not flushed
ACTIVATION_THRESHOLD = -float(np.nextafter(np.float32(0), np.float32(1)))

#: rt_info section of the exported IR that holds our metadata
RT_INFO_KEY = 'skd_bnn_mm'

#: compile options under which the IR computes what PyTorch does
EXACT_CPU_CONFIG = {'INFERENCE_PRECISION_HINT': 'f32',
                    'CPU_DENORMALS_OPTIMIZATION': False}


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise ImportError(
            'OpenVINO is not installed: pip install openvino (or install '
            'this package with its deploy extra: pip install -e ".[deploy]")'
        ) from None
    return openvino


def _const(output) -> Optional[np.ndarray]:
    """Value of a constant input (through Converts), else None."""
    node = output.get_node()
    while node.get_type_name() == 'Convert':
        node = node.input_value(0).get_node()
    if node.get_type_name() != 'Constant':
        return None
    return node.get_data()


def _module_name(node) -> str:
    """The PyTorch module path in a converted node's friendly name
    (``__module.model.backbone.layer1.0.conv1/aten::where/Select``)."""
    parts = node.get_friendly_name().split('/')[0].split('.')
    # ``__module`` is the traced root, ``model`` the LogitsModel attribute
    for prefix in ('__module', 'model'):
        if parts and parts[0] == prefix:
            parts = parts[1:]
    return '.'.join(parts)


def _sign_source(conv):
    """``(x, select)`` if ``conv`` reads ``Select(GreaterEqual(x, 0), 1,
    -1)``, else None."""
    select = conv.input_value(0).get_node()
    if select.get_type_name() != 'Select':
        return None
    ge = select.input_value(0).get_node()
    if ge.get_type_name() != 'GreaterEqual':
        return None
    values = [_const(ge.input_value(1)), _const(select.input_value(1)),
              _const(select.input_value(2))]
    if any(v is None or v.size != 1 for v in values):
        return None
    zero, pos, neg = (float(v.reshape(-1)[0]) for v in values)
    if (zero, pos, neg) != (0.0, 1.0, -1.0):
        return None
    return ge.input_value(0), select


def _u1_constant(bits: np.ndarray):
    """``u1`` constant of ``bits`` (bool, weight shape), LSB-first."""
    ov = _import_openvino()
    tensor = ov.Tensor(ov.Type.u1, ov.Shape(list(bits.shape)))
    tensor.data[:] = np.packbits(bits.reshape(-1), bitorder='little')
    return ov.op.Constant(tensor)


def binarize_ir(ov_model) -> Dict[str, list]:
    """Rewrite every binary conv of a converted model in place (see the
    module docstring). Returns ``{'binary': [...], 'float': [...]}``: the
    module names of the convs made ``BinaryConvolution`` and of the
    sign-fed convs left float (channels not a multiple of 8)."""
    import openvino.opset13 as ops
    done: Dict[str, list] = {'binary': [], 'float': []}
    quantized = {}
    for conv in ov_model.get_ordered_ops():
        if conv.get_type_name() != 'Convolution':
            continue
        found = _sign_source(conv)
        weight = _const(conv.input_value(1))
        if found is None or weight is None:
            continue
        source, select = found
        name = _module_name(select)
        weight = weight.astype(np.float32)
        mags = np.abs(weight.reshape(weight.shape[0], -1))
        scale = mags.max(axis=1)
        if not np.all(mags == scale[:, None]):
            raise ValueError(
                f'OpenVINO conv {name} reads a sign but its weights have '
                'more than one magnitude per output channel: it is not a '
                'binary conv sign(Wb) * s; export with binary=False.')
        if weight.shape[1] % 8:
            done['float'].append(name)
            continue
        key = (source.get_node().get_friendly_name(), source.get_index())
        if key not in quantized:
            t = np.float32(ACTIVATION_THRESHOLD)
            quantized[key] = ops.fake_quantize(
                source, t, t, np.float32(0), np.float32(1), 2,
                name=f'{name}/binarize')
        binary = ops.binary_convolution(
            quantized[key], _u1_constant(weight >= 0),
            list(conv.get_strides()), list(conv.get_pads_begin()),
            list(conv.get_pads_end()), list(conv.get_dilations()),
            'xnor-popcount', 0.0, name=f'{name}/xnor')
        out = ops.multiply(binary, scale.reshape(1, -1, 1, 1))
        out.set_friendly_name(name)
        for target in list(conv.output(0).get_target_inputs()):
            target.replace_source_output(out.output(0))
        done['binary'].append(name)
    ov_model.validate_nodes_and_infer_types()
    return done


def to_openvino(model: nn.Module,
                input_shape: Sequence[int] = (3, 32, 32),
                batch: Optional[int] = 1,
                binary: bool = True):
    """Convert ``model`` (eval mode; not modified) to an ``openvino.Model``.

    Returns ``(ov_model, convs)`` with ``convs`` as :func:`binarize_ir`
    returns it (both lists empty for ``binary=False``). ``batch=None``
    makes the batch axis dynamic; the CPU plugin runs ``BinaryConvolution``
    only on static shapes, so such a model must be reshaped before it is
    compiled (:func:`compile_openvino` does with its ``batch``).
    """
    ov = _import_openvino()
    wrapped = LogitsModel(to_deploy(model)).eval()
    example = torch.zeros(1, *input_shape, device=_device(wrapped))
    shape = [-1 if batch is None else int(batch), *input_shape]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # tracer warnings
        # traced here without convert_model's trace check, which runs the
        # network three more times (most of the conversion's time)
        traced = torch.jit.trace(wrapped, example, check_trace=False)
        ov_model = ov.convert_model(traced, example_input=example,
                                    input=[shape])
    convs = binarize_ir(ov_model) if binary else {'binary': [],
                                                   'float': []}
    return ov_model, convs


def export_openvino(model: nn.Module,
                    path: str,
                    input_shape: Sequence[int] = (3, 32, 32),
                    batch: Optional[int] = 1,
                    binary: bool = True,
                    metadata: Optional[Dict[str, Any]] = None
                    ) -> Dict[str, Any]:
    """Write the OpenVINO IR of ``model`` to ``path`` (``.xml`` + ``.bin``).

    Args:
        model: a classifier with :class:`IRConv2d` layers (or converted by
            :func:`to_deploy`), or one loaded by ``load_1bit``.
        path: output ``.xml``; the weights go to the ``.bin`` beside it.
        input_shape: ``(C, H, W)`` of one preprocessed image.
        batch: fixed batch size, or ``None`` for a dynamic batch axis
            (reshape it to a fixed size before compiling it).
        binary: ``BinaryConvolution`` for the binary convs; ``False`` keeps
            float convolutions (the baseline of the same network).
        metadata: extra entries for the IR's ``rt_info``.

    Returns:
        The metadata written (with the lists of binary / float convs).
    """
    ov = _import_openvino()
    ov_model, convs = to_openvino(model, input_shape, batch, binary)
    info = dict(_preprocess_meta(model))
    info.update(producer='skd_bnn_mm',
                binary=json.dumps(bool(binary)),
                binary_convs=json.dumps(convs['binary']),
                float_sign_convs=json.dumps(convs['float']),
                activation_threshold=repr(ACTIVATION_THRESHOLD),
                compile_config=json.dumps(EXACT_CPU_CONFIG))
    info.update({k: str(v) for k, v in (metadata or {}).items()})
    for key, value in info.items():
        ov_model.set_rt_info(value, [RT_INFO_KEY, key])
    # fp16 compression would round the float weights
    ov.save_model(ov_model, path, compress_to_fp16=False)
    return info


def read_metadata(path: str) -> Dict[str, str]:
    """The ``rt_info`` entries :func:`export_openvino` wrote."""
    ov = _import_openvino()
    ov_model = ov.Core().read_model(path)
    if not ov_model.has_rt_info(RT_INFO_KEY):
        return {}
    section = ov_model.get_rt_info()[RT_INFO_KEY]
    if not isinstance(section, dict):
        section = section.astype(dict)
    return {k: str(getattr(v, 'value', v)) for k, v in section.items()}


def compile_openvino(model_or_path: Union[str, Any],
                     threads: Optional[int] = None,
                     batch: Optional[int] = None,
                     perf_count: bool = False,
                     config: Optional[Dict[str, Any]] = None):
    """Compile an IR for the CPU with :data:`EXACT_CPU_CONFIG`, one stream,
    the latency hint and ``threads`` inference threads (None: OpenVINO's
    choice). ``batch`` reshapes the batch axis to that size."""
    ov = _import_openvino()
    core = ov.Core()
    ov_model = (core.read_model(model_or_path)
                if isinstance(model_or_path, str) else model_or_path)
    shape = ov_model.input(0).get_partial_shape()
    if batch is not None and shape[0] != ov.Dimension(int(batch)):
        shape[0] = int(batch)
        ov_model.reshape({ov_model.input(0): shape})
    options = dict(EXACT_CPU_CONFIG, NUM_STREAMS=1,
                   PERFORMANCE_HINT='LATENCY', PERF_COUNT=bool(perf_count))
    if threads is not None:
        options['INFERENCE_NUM_THREADS'] = int(threads)
    options.update(config or {})
    return core.compile_model(ov_model, 'CPU', options)


def run_openvino(model_or_path, inputs: torch.Tensor,
                 threads: Optional[int] = None) -> np.ndarray:
    """Logits of the IR (compiled by :func:`compile_openvino` for the batch
    size of ``inputs``)."""
    compiled = compile_openvino(model_or_path, threads, len(inputs))
    x = inputs.detach().cpu().numpy().astype(np.float32)
    return np.asarray(compiled(x)[0])


def verify_openvino(path: str, reference: nn.Module,
                    inputs: torch.Tensor) -> float:
    """Max absolute difference between the IR's logits and ``reference``'s
    eval-mode logits on ``inputs``."""
    was_training = reference.training
    reference.eval()
    with torch.no_grad():
        ref = LogitsModel(reference)(inputs.to(_device(reference)))
    reference.train(was_training)
    out = run_openvino(path, inputs)
    return float(np.abs(out - ref.cpu().numpy()).max())


def perf_counters(request) -> Dict[str, Dict[str, float]]:
    """Per-layer time (ms) of the last inference of an infer request
    compiled with ``perf_count=True``, summed by ``layer type/kernel``,
    largest first."""
    total: Dict[str, Dict[str, float]] = {}
    for info in request.get_profiling_info():
        if info.status.name != 'EXECUTED':
            continue
        key = f'{info.node_type}/{info.exec_type}'
        entry = total.setdefault(key, dict(ms=0.0, count=0))
        entry['ms'] += info.real_time.total_seconds() * 1e3
        entry['count'] += 1
    return dict(sorted(total.items(), key=lambda kv: -kv[1]['ms']))
