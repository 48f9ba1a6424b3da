"""Export a binary classifier to an OpenVINO IR with BinaryConvolution.

    python tools/deploy/export_openvino.py CONFIG CHECKPOINT OUT.xml
        [--float] [--shape C H W] [--batch N] [--no-verify]
        [--cfg-options key=value ...]
    python tools/deploy/export_openvino.py [CONFIG] MODEL.bnn OUT.xml ...

Every binary conv becomes ``FakeQuantize (2 levels) -> BinaryConvolution
(u1 weights) -> Multiply (per-channel scale)``; the stem, shortcuts, BN,
pooling and head stay float ops (``docs/deploy.md``). ``--float`` writes the
same network with float convolutions, the baseline to compare speed with.
The model comes from a config and a training checkpoint (read with the
project's safe loader), or from a ``.bnn`` file alone (``load_1bit``: no
training code or config needed; then give ``--shape``, unless the config
named in the file exists). The IR's input is the preprocessed batch of
``--batch`` images (default 1; 0: a dynamic batch axis, to be reshaped
before compiling); its output the logits.

Unless --no-verify, OpenVINO's logits on a random batch are compared with
PyTorch's eval logits (the export fails above 1e-4 relative difference or
on a different top-1).
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from tools.analysis_tools._common import (  # noqa: E402
    guess_input_shape, load_config, load_inference_model)

TOLERANCE = 1e-4


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Export a binary classifier to OpenVINO '
        '(BinaryConvolution)')
    parser.add_argument('inputs', nargs='+', metavar='SOURCE',
                        help='CONFIG CHECKPOINT OUT.xml, CONFIG MODEL.bnn '
                        'OUT.xml or MODEL.bnn OUT.xml')
    parser.add_argument('--float', action='store_true',
                        help='float convolutions instead of '
                        'BinaryConvolution (the same network)')
    parser.add_argument('--shape', type=int, nargs=3, metavar=('C', 'H', 'W'),
                        help='input shape of one image (default: from the '
                        'config)')
    parser.add_argument('--batch', type=int, default=1,
                        help='batch size of the IR (0: dynamic)')
    parser.add_argument('--no-verify', action='store_true',
                        help='skip the comparison with PyTorch')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config')
    args = parser.parse_args(argv)
    if len(args.inputs) == 3:
        args.config, args.checkpoint, args.out = args.inputs
    elif len(args.inputs) == 2 and args.inputs[0].endswith('.bnn'):
        args.config = None
        args.checkpoint, args.out = args.inputs
    else:
        parser.error('give CONFIG CHECKPOINT OUT.xml, CONFIG MODEL.bnn '
                     'OUT.xml or MODEL.bnn OUT.xml')
    if not args.out.endswith('.xml'):
        parser.error(f'the output must be an .xml file (its weights go to '
                     f'the .bin beside it), got {args.out}')
    if args.batch < 0:
        parser.error('--batch must be >= 1, or 0 for a dynamic batch axis')
    return args


def load_model(config, checkpoint, cfg_options=None, shape=None,
               tool='export_openvino'):
    """``(eval model, (C, H, W), config or None)`` from a config and a
    checkpoint, a config and a ``.bnn`` file, or a ``.bnn`` file alone
    (``config=None``); also used by the benchmark tool. ``checkpoint=None``
    keeps the config's initial weights; errors name ``tool``."""
    from skd_bnn_mm.deploy import load_1bit, read_1bit
    cfg = load_config(config, cfg_options) if config else None
    if checkpoint is not None and checkpoint.endswith('.bnn'):
        model = load_1bit(checkpoint)
        if cfg is None and shape is None:
            source = read_1bit(checkpoint)[0].get('meta', {}).get(
                'source_config')
            if not (source and osp.isfile(source)):
                raise SystemExit(
                    f'{checkpoint}: give --shape C H W (or the config): the '
                    'input size is not stored in a .bnn file')
            cfg = load_config(source)
    else:
        if cfg is None:
            raise SystemExit('a checkpoint needs its config')
        model, _, _ = load_inference_model(cfg, checkpoint, tool)
    if shape is None:
        shape = guess_input_shape(cfg)
    return model.eval(), tuple(shape), cfg


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import torch

    from skd_bnn_mm.deploy import export_openvino, run_openvino
    from skd_bnn_mm.models.utils import tensor_forward
    model, shape, _ = load_model(args.config, args.checkpoint,
                                 args.cfg_options, args.shape)
    batch = args.batch or None
    meta = export_openvino(
        model, args.out, shape, batch=batch, binary=not args.float,
        metadata=dict(source=osp.basename(args.checkpoint)))
    import json
    binary, kept = (json.loads(meta['binary_convs']),
                    json.loads(meta['float_sign_convs']))
    kind = 'float convolutions' if args.float else (
        f'{len(binary)} BinaryConvolution')
    print(f'wrote {args.out} (input [{batch or "N"}, '
          f'{", ".join(map(str, shape))}], {kind})')
    if kept:
        print(f'kept as float convs (input channels not a multiple of 8): '
              f'{", ".join(kept)}')
    result = dict(out=args.out, binary_convs=binary, float_sign_convs=kept)
    if not args.no_verify:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(batch or 2, *shape, generator=gen)
        with torch.no_grad():
            ref = tensor_forward(model, x).numpy()
        out = run_openvino(args.out, x)
        diff = float(np.abs(out - ref).max())
        rel = diff / max(1.0, float(np.abs(ref).max()))
        same_top1 = bool(np.array_equal(out.argmax(1), ref.argmax(1)))
        result.update(max_abs_diff=diff, same_top1=same_top1)
        print(f'check: max |OpenVINO - PyTorch| = {diff:.3g} on a random '
              f'batch of shape {tuple(x.shape)}, top-1 '
              f'{"identical" if same_top1 else "DIFFERENT"}')
        if not (rel < TOLERANCE and same_top1):
            raise SystemExit(f'export_openvino: OpenVINO differs from '
                             f'PyTorch (max difference {diff:.3g})')
    return result


if __name__ == '__main__':
    main()
