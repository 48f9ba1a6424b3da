"""Deployment: 1-bit packed export (``.bnn``, safetensors), ONNX export and
OpenVINO export (``BinaryConvolution``).

Only torch and numpy are imported here; safetensors, onnx, onnxruntime and
openvino are imported inside the functions that use them.
"""
from .bnn_format import (BNNFormatError, load_1bit, read_1bit,  # noqa: F401
                         save_1bit)
from .convert import (build_inference_model, build_model,  # noqa: F401
                      inference_config, load_weights, replace_binary_convs,
                      to_deploy)
from .onnx_export import LogitsModel, export_onnx, run_onnx, verify_onnx
from .openvino_export import (ACTIVATION_THRESHOLD,  # noqa: F401
                              binarize_ir, compile_openvino, export_openvino,
                              perf_counters, read_metadata, run_openvino,
                              to_openvino, verify_openvino)
from .packed_binary_conv import (ZERO_SCALE_EXPONENT,  # noqa: F401
                                 PackedBinaryConv2d, exponent_scales,
                                 pack_signs, scale_exponents, unpack_signs)

__all__ = [
    'ACTIVATION_THRESHOLD', 'binarize_ir', 'compile_openvino',
    'export_openvino', 'perf_counters', 'read_metadata', 'run_openvino',
    'to_openvino', 'verify_openvino', 'BNNFormatError', 'LogitsModel',
    'PackedBinaryConv2d',
    'ZERO_SCALE_EXPONENT', 'build_inference_model', 'build_model',
    'exponent_scales', 'export_onnx', 'inference_config', 'load_1bit',
    'load_weights', 'pack_signs', 'read_1bit', 'replace_binary_convs',
    'run_onnx', 'save_1bit', 'scale_exponents', 'to_deploy', 'unpack_signs',
    'verify_onnx'
]
