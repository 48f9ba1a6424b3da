"""Export a trained binary classifier to ONNX and check it with onnxruntime.

    python tools/analysis_tools/export_onnx.py CONFIG CHECKPOINT OUT.onnx
        [--shape C H W] [--opset 17] [--no-verify]
        [--cfg-options key=value ...]

Each binary conv is emitted as ``Conv(Where(GreaterOrEqual(x, 0), 1, -1), W)``
with ``W`` a constant of ``±2**e`` per output channel. The graph input is the
preprocessed (normalised) image batch, the output the logits; the
normalisation is stored in the model's metadata. Unless --no-verify, the
onnxruntime output on a random batch (graph optimizations off, i.e. the graph
as exported) must match PyTorch's eval output within 1e-4; the difference
with onnxruntime's default optimizations is printed too. The checkpoint is
read with the project's safe loader.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))
from tools.analysis_tools._common import (  # noqa: E402
    guess_input_shape, load_config, load_inference_model)

TOLERANCE = 1e-4


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Export a binary classifier to ONNX')
    parser.add_argument('config', help='config the checkpoint was trained '
                        'with')
    parser.add_argument('checkpoint', help='checkpoint (.pth)')
    parser.add_argument('out', help='output .onnx file')
    parser.add_argument('--shape', type=int, nargs=3, metavar=('C', 'H', 'W'),
                        help='input shape of one image (default: from the '
                        'config)')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--no-verify', action='store_true',
                        help='skip the onnxruntime comparison')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    import torch

    from skd_bnn_mm.deploy import export_onnx, verify_onnx
    model, _, _ = load_inference_model(cfg, args.checkpoint, 'export_onnx')
    shape = tuple(args.shape) if args.shape else guess_input_shape(cfg)
    export_onnx(model, args.out, shape, opset=args.opset,
                metadata=dict(source_checkpoint=osp.basename(
                    args.checkpoint)))
    print(f'wrote {args.out} (input [N, {", ".join(map(str, shape))}], '
          f'opset {args.opset})')
    result = dict(out=args.out)
    if not args.no_verify:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(4, *shape, generator=gen)
        diff = verify_onnx(args.out, model, x)
        opt_diff = verify_onnx(args.out, model, x, optimize=True)
        result.update(max_abs_diff=diff, max_abs_diff_optimized=opt_diff)
        print(f'check: max |onnxruntime - PyTorch| = {diff:.3g} on a random '
              f'batch of shape {tuple(x.shape)} ({opt_diff:.3g} with '
              "onnxruntime's graph optimizations)")
        if not diff < TOLERANCE:
            raise SystemExit(f'export_onnx: onnxruntime differs from PyTorch '
                             f'by {diff:.3g} (> {TOLERANCE})')
        if not opt_diff < TOLERANCE:
            print('note: with graph optimizations onnxruntime folds BN into '
                  'the binary convs, which can flip the sign of outputs that '
                  'are exact ties (typical of untrained BN); see '
                  'docs/deploy.md.')
    return result


if __name__ == '__main__':
    main()
