"""Export a trained binary classifier to a 1-bit ``.bnn`` file.

    python tools/analysis_tools/export_1bit.py CONFIG CHECKPOINT OUT.bnn
        [--shape C H W] [--no-verify] [--cfg-options key=value ...]

Binary conv weights are stored as packed sign bits plus int8 power-of-two
exponents, everything else in full precision, with the model config in a
JSON header (format: docs/deploy.md). The checkpoint is read with the
project's safe loader (weights only, no arbitrary objects). Unless
--no-verify, the file is loaded back with ``skd_bnn_mm.deploy.load_1bit`` and
its eval-mode logits are compared with the checkpoint's on a random batch.
"""
import argparse
import io
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))
from tools.analysis_tools._common import (  # noqa: E402
    guess_input_shape, load_config, load_inference_model)


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Export a binary classifier with 1-bit packed weights')
    parser.add_argument('config', help='config the checkpoint was trained '
                        'with')
    parser.add_argument('checkpoint', help='checkpoint (.pth)')
    parser.add_argument('out', help='output file, e.g. model.bnn')
    parser.add_argument('--shape', type=int, nargs=3, metavar=('C', 'H', 'W'),
                        help='input shape for the check (default: from the '
                        'config)')
    parser.add_argument('--no-verify', action='store_true',
                        help='skip loading the file back and comparing')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config')
    return parser.parse_args(argv)


def state_dict_bytes(model) -> int:
    """Size of ``torch.save(model.state_dict())``: the fp32 reference."""
    import torch
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    import torch

    from skd_bnn_mm.analysis.ops_counter import fmt_bytes
    from skd_bnn_mm.deploy import load_1bit, save_1bit
    from skd_bnn_mm.deploy.onnx_export import LogitsModel
    model, model_cfg, meta = load_inference_model(cfg, args.checkpoint,
                                                  'export_1bit')
    extra = dict(source_checkpoint=osp.basename(args.checkpoint),
                 source_config=osp.basename(args.config))
    dataset_meta = meta.get('dataset_meta') if isinstance(meta, dict) else None
    if isinstance(dataset_meta, dict) and dataset_meta.get('classes'):
        extra['classes'] = list(dataset_meta['classes'])
    header = save_1bit(model, args.out, model_cfg, extra)
    size = osp.getsize(args.out)
    ref_size = state_dict_bytes(model)
    result = dict(out=args.out, bytes=size, fp32_state_dict_bytes=ref_size,
                  ratio=ref_size / size,
                  binary_convs=len(header['binary_convs']))
    print(f'wrote {args.out}: {len(header["binary_convs"])} binary convs, '
          f'{fmt_bytes(size)} (fp32 state_dict {fmt_bytes(ref_size)}, '
          f'{ref_size / size:.1f}x smaller)')
    if not args.no_verify:
        shape = tuple(args.shape) if args.shape else guess_input_shape(cfg)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(4, *shape, generator=gen)
        loaded = load_1bit(args.out)
        with torch.no_grad():
            a = LogitsModel(model)(x)
            b = LogitsModel(loaded)(x)
        diff = (a - b).abs().max().item()
        result['max_abs_diff'] = diff
        print(f'check: max |logits(original) - logits(loaded)| = {diff:.3g} '
              f'on a random batch of shape {tuple(x.shape)}')
        if diff > 1e-5:
            raise SystemExit('export_1bit: the loaded model differs from the '
                             f'checkpoint (max abs diff {diff:.3g} > 1e-5)')
    return result


if __name__ == '__main__':
    main()
