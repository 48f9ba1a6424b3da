"""Parameters, FLOPs, BOPs, OPs and weight memory of a (binary) network.

Counted by forward hooks during one dummy forward pass of a single image, so
any model works, including converted timm / mmpretrain backbones.

Convention (Bi-Real Net, IR-Net, ReActNet):

- FLOPs: multiply-accumulates (MACs) of the full-precision conv and linear
  layers; a conv's MACs are ``out_elements * in_channels/groups * kh * kw``,
  a linear layer's ``out_elements * in_features``. Bias additions,
  BatchNorm, activations, pooling and shortcut additions are not counted
  (BN folds into the neighbouring layer at inference; the others are
  negligible next to the MACs). Matrix products done with functions rather
  than modules are not seen by hooks.
- BOPs: the MACs of the binary convs (``IRConv2d``,
  ``PackedBinaryConv2d``), each an XNOR + popcount at inference.
- OPs = FLOPs + BOPs / 64 (a 64-bit CPU does 64 binary operations per
  instruction).
- Weight memory: parameters only (buffers are not counted). At 32 bits every
  parameter takes 32 bits. Deployed: a binary conv weight takes 1 bit plus
  one 32-bit scale per output channel, every other parameter 32 bits. A BN
  layer counts as its two affine parameters per channel (its running
  statistics fold into them at inference).
"""
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from torch.nn.modules.conv import _ConvNd

from ..deploy.packed_binary_conv import PackedBinaryConv2d
from ..models.layers import IRConv2d
from ..models.utils.tensor_forward import tensor_forward

#: binary operations per instruction assumed by OPs = FLOPs + BOPs / 64
BOPS_PER_OP = 64
BINARY_TYPES = (IRConv2d, PackedBinaryConv2d)


@dataclass
class LayerOps:
    """Counts of one module (its own parameters, not its children's)."""
    name: str
    type: str
    kind: str  # 'binary', 'fp' (conv/linear) or 'other'
    params: int = 0
    macs: int = 0
    calls: int = 0
    bits_fp32: int = 0
    bits_deployed: int = 0


@dataclass
class OpsReport:
    """Totals and per-layer counts for one input shape (batch 1)."""
    input_shape: List[int]
    layers: List[LayerOps] = field(default_factory=list)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def binary_params(self) -> int:
        return sum(layer.params for layer in self.layers
                   if layer.kind == 'binary')

    @property
    def flops(self) -> int:
        return sum(layer.macs for layer in self.layers if layer.kind == 'fp')

    @property
    def bops(self) -> int:
        return sum(layer.macs for layer in self.layers
                   if layer.kind == 'binary')

    @property
    def ops(self) -> float:
        return self.flops + self.bops / BOPS_PER_OP

    @property
    def memory_fp32_bytes(self) -> float:
        return sum(layer.bits_fp32 for layer in self.layers) / 8

    @property
    def memory_deployed_bytes(self) -> float:
        return sum(layer.bits_deployed for layer in self.layers) / 8

    def totals(self) -> Dict[str, Any]:
        return dict(params=self.params, binary_params=self.binary_params,
                    flops=self.flops, bops=self.bops, ops=self.ops,
                    memory_fp32_bytes=self.memory_fp32_bytes,
                    memory_deployed_bytes=self.memory_deployed_bytes)

    def to_dict(self) -> Dict[str, Any]:
        return dict(input_shape=list(self.input_shape),
                    totals=self.totals(),
                    layers=[asdict(layer) for layer in self.layers])


def _own_params(module: nn.Module) -> int:
    n = sum(p.numel() for p in module.parameters(recurse=False))
    if isinstance(module, PackedBinaryConv2d):
        # a packed conv keeps its weights (and bias) in buffers
        n += int(torch.Size(module.weight_shape).numel())
        if module.bias is not None:
            n += module.bias.numel()
    return n


def _macs(module: nn.Module, inputs, output) -> int:
    if not isinstance(output, torch.Tensor) or output.dim() == 0:
        return 0
    batch = output.shape[0] if output.dim() > 1 else 1
    per_out = output.numel() // max(batch, 1)
    if isinstance(module, _ConvNd):
        k = 1
        for size in module.kernel_size:
            k *= size
        if module.transposed:
            x = inputs[0]
            return (x.numel() // max(batch, 1)) * \
                (module.out_channels // module.groups) * k
        return per_out * (module.in_channels // module.groups) * k
    if isinstance(module, PackedBinaryConv2d):
        k = 1
        for size in module.kernel_size:
            k *= size
        return per_out * (module.in_channels // module.groups) * k
    if isinstance(module, nn.Linear):
        return per_out * module.in_features
    return 0


def count_ops(model: nn.Module,
              input_shape: Sequence[int] = (3, 32, 32),
              inputs: Optional[torch.Tensor] = None) -> OpsReport:
    """Count parameters, FLOPs, BOPs and weight memory of ``model``.

    Args:
        model: any module; an mmengine ``BaseModel`` (e.g. an mmpretrain
            classifier) is called with ``mode='tensor'``, i.e. without its
            data preprocessor.
        input_shape: ``(C, H, W)`` of one image; a zero-mean random image of
            this shape is used unless ``inputs`` is given.
        inputs: an explicit batch (MACs are reported per image).

    Returns:
        OpsReport: per-layer rows in registration order and totals.
    """
    rows: Dict[int, LayerOps] = {}
    for name, module in model.named_modules():
        if id(module) in rows:
            continue
        params = _own_params(module)
        is_binary = isinstance(module, BINARY_TYPES)
        is_fp = (isinstance(module, (_ConvNd, nn.Linear))
                 and not is_binary)
        if not (params or is_binary or is_fp):
            continue
        kind = 'binary' if is_binary else ('fp' if is_fp else 'other')
        rows[id(module)] = LayerOps(name=name or '(model)',
                                    type=type(module).__name__, kind=kind,
                                    params=params)

    def hook(module, args, output):
        row = rows[id(module)]
        row.macs += _macs(module, args, output)
        row.calls += 1

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if id(m) in rows and rows[id(m)].kind != 'other']
    if inputs is None:
        gen = torch.Generator().manual_seed(0)
        inputs = torch.randn(1, *input_shape, generator=gen)
    try:
        param = next(model.parameters(), None)
        if param is not None:
            inputs = inputs.to(param.device)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            tensor_forward(model, inputs)
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    for module in model.modules():
        row = rows.get(id(module))
        if row is None:
            continue
        row.bits_fp32 = 32 * row.params
        if row.kind == 'binary':
            shape = (module.weight_shape if isinstance(
                module, PackedBinaryConv2d) else module.weight.shape)
            weights = int(torch.Size(shape).numel())
            row.bits_deployed = (weights + 32 * module.out_channels
                                 + 32 * (row.params - weights))
        else:
            row.bits_deployed = 32 * row.params
    return OpsReport(input_shape=list(inputs.shape[1:]),
                     layers=list(rows.values()))


def fmt_count(value: float) -> str:
    """``1.68e9``-style number with 3 significant digits."""
    if value == 0:
        return '0'
    mantissa, exp = f'{value:.2e}'.split('e')
    return f'{mantissa}e{int(exp)}'


def fmt_bytes(num: float) -> str:
    for unit, size in (('GB', 1 << 30), ('MB', 1 << 20), ('KB', 1 << 10)):
        if num >= size:
            return f'{num / size:.2f} {unit}'
    return f'{num:.0f} B'


def layer_table(report: OpsReport) -> str:
    """Per-layer table (plain text)."""
    header = (f'{"layer":<40} {"type":<20} {"kind":<6} {"params":>10} '
              f'{"FLOPs":>10} {"BOPs":>10} {"deployed":>10}')
    lines = [header, '-' * len(header)]
    for row in report.layers:
        flops = row.macs if row.kind == 'fp' else 0
        bops = row.macs if row.kind == 'binary' else 0
        lines.append(
            f'{row.name[:40]:<40} {row.type[:20]:<20} {row.kind:<6} '
            f'{row.params:>10,} {fmt_count(flops):>10} {fmt_count(bops):>10} '
            f'{fmt_bytes(row.bits_deployed / 8):>10}')
    return '\n'.join(lines)


SUMMARY_COLUMNS = ('model', 'input', 'params', 'binary params', 'FLOPs',
                   'BOPs', 'OPs', 'weights fp32', 'weights 1-bit', 'ratio')


def summary_row(name: str, report: OpsReport) -> List[str]:
    fp32 = report.memory_fp32_bytes
    dep = report.memory_deployed_bytes
    return [name, 'x'.join(str(s) for s in report.input_shape),
            f'{report.params / 1e6:.2f}M',
            f'{report.binary_params / 1e6:.2f}M',
            fmt_count(report.flops), fmt_count(report.bops),
            fmt_count(report.ops), fmt_bytes(fp32), fmt_bytes(dep),
            f'{fp32 / dep:.1f}x' if dep else '-']


def summary_table(rows: List[List[str]]) -> str:
    """Markdown table of :func:`summary_row` rows."""
    lines = ['| ' + ' | '.join(SUMMARY_COLUMNS) + ' |',
             '|' + '|'.join('---' for _ in SUMMARY_COLUMNS) + '|']
    lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return '\n'.join(lines)
