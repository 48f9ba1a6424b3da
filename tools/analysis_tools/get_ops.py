"""Parameters, FLOPs, BOPs, OPs and weight memory of models from configs.

    python tools/analysis_tools/get_ops.py CONFIG [CONFIG ...] [--shape C H W]
        [--json OUT] [--per-layer] [--cfg-options key=value ...]

FLOPs are the multiply-accumulates of full-precision conv/linear layers,
BOPs those of binary convs, OPs = FLOPs + BOPs / 64; BN, activations,
pooling and additions are not counted (see skd_bnn_mm.analysis.ops_counter).
Weights are random: only shapes matter.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))
from tools.analysis_tools._common import (guess_input_shape,  # noqa: E402
                                          load_config)


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Count parameters, FLOPs, BOPs and OPs')
    parser.add_argument('configs', nargs='+', metavar='CONFIG')
    parser.add_argument('--shape', type=int, nargs=3, metavar=('C', 'H', 'W'),
                        help='input shape of one image (default: from the '
                        'test pipeline; 32x32 for CIFAR, 224x224 otherwise)')
    parser.add_argument('--json', help='write the counts to this JSON file')
    parser.add_argument('--per-layer', action='store_true',
                        help='print the per-layer table (always printed for '
                        'a single config)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of every config')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from skd_bnn_mm.analysis import (count_ops, layer_table, summary_row,
                                     summary_table)
    from skd_bnn_mm.analysis.ops_counter import fmt_bytes, fmt_count
    from skd_bnn_mm.deploy import build_inference_model
    rows, records = [], []
    for path in args.configs:
        cfg = load_config(path, args.cfg_options)
        shape = tuple(args.shape) if args.shape else guess_input_shape(cfg)
        model, _, _ = build_inference_model(cfg)
        report = count_ops(model, shape)
        name = osp.splitext(osp.basename(path))[0]
        if args.per_layer or len(args.configs) == 1:
            print(f'\n{name} (input {"x".join(map(str, shape))})')
            print(layer_table(report))
            print(f'params {report.params:,} (binary '
                  f'{report.binary_params:,}), FLOPs {fmt_count(report.flops)}'
                  f', BOPs {fmt_count(report.bops)}, OPs '
                  f'{fmt_count(report.ops)}, weights '
                  f'{fmt_bytes(report.memory_fp32_bytes)} fp32 -> '
                  f'{fmt_bytes(report.memory_deployed_bytes)} deployed')
        rows.append(summary_row(name, report))
        records.append(dict(config=path, name=name, **report.to_dict()))
    print()
    print(summary_table(rows))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(models=records), f, indent=1)
        print(f'\nwrote {args.json}')
    return records


if __name__ == '__main__':
    main()
