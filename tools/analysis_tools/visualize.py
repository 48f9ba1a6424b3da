"""Analysis pictures (PNG) of binary networks and their training.

    python tools/analysis_tools/visualize.py tsne CONFIG CHECKPOINT --out F.png
        [--split test] [--max-samples 1000] [--batch-size 100]
        [--perplexity P] [--num-workers 2] [--cfg-options ...]
    python tools/analysis_tools/visualize.py bank SOURCE --out F.png
        [--temperature 4] [--key NAME]
    python tools/analysis_tools/visualize.py sign-agreement CONFIG CHECKPOINT
        --out F.png [--split test] [--num-images 64] [--json F.json]
    python tools/analysis_tools/visualize.py curves LOG [LOG ...] --out F.png
        [--labels A B ...] [--keys loss accuracy/top1 ...]

- tsne: t-SNE of the penultimate features (input of the final linear layer)
  of the first --max-samples images of a split, coloured by class.
- bank: SKD-BNN's soft-label bank as a class-by-class heat map; SOURCE is a
  training checkpoint, a JSON dump of SoftLabelBankHook or a CSV. With
  --temperature the rows are softmax(bank / T), what the label loss matches.
- sign-agreement: per binary conv, the fraction of output elements where the
  binary conv and the real conv (standardised latent weights, same real
  input) agree in sign, on one batch.
- curves: losses, learning rate and validation metrics from mmengine's
  vis_data/scalars.json (a file or a work dir); several runs overlay.

Checkpoints are read with the project's safe loader.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))
from tools.analysis_tools._common import (  # noqa: E402
    build_data_loader, load_config, load_inference_model)
from tools.common import import_plugin  # noqa: E402


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Analysis pictures (PNG)')
    sub = parser.add_subparsers(dest='command', required=True)

    def model_args(p):
        p.add_argument('config')
        p.add_argument('checkpoint')
        p.add_argument('--out', required=True, help='output PNG')
        p.add_argument('--split', default='test',
                       choices=['train', 'val', 'test'])
        p.add_argument('--num-workers', type=int, default=2)
        p.add_argument('--cfg-options', nargs='+', action=DictAction)

    p = sub.add_parser('tsne', help='t-SNE of penultimate features')
    model_args(p)
    p.add_argument('--max-samples', type=int, default=1000)
    p.add_argument('--batch-size', type=int, default=100)
    p.add_argument('--perplexity', type=float)
    p.add_argument('--seed', type=int, default=0)

    p = sub.add_parser('bank', help='soft-label bank heat map')
    p.add_argument('source', help='checkpoint, JSON dump or CSV')
    p.add_argument('--out', required=True, help='output PNG')
    p.add_argument('--temperature', type=float,
                   help='show softmax(bank / T) instead of the logits')
    p.add_argument('--key', help='state_dict key of the bank (checkpoints '
                   'with several banks)')

    p = sub.add_parser('sign-agreement',
                       help='binary vs real conv sign agreement')
    model_args(p)
    p.add_argument('--num-images', type=int, default=64)
    p.add_argument('--json', help='also write the values to this JSON file')

    p = sub.add_parser('curves', help='training curves from scalars.json')
    p.add_argument('logs', nargs='+', help='scalars.json files or work dirs')
    p.add_argument('--out', required=True, help='output PNG')
    p.add_argument('--labels', nargs='+', help='one legend label per log')
    p.add_argument('--keys', nargs='+', help='keys to plot (default: losses, '
                   'lr and validation metrics)')
    return parser.parse_args(argv)


def _model(args):
    cfg = load_config(args.config, args.cfg_options)
    model, _, _ = load_inference_model(cfg, args.checkpoint, 'visualize')
    return cfg, model


def run_tsne(args):
    from skd_bnn_mm.analysis import penultimate_features, plot_tsne
    cfg, model = _model(args)
    loader = build_data_loader(cfg, args.split, args.batch_size,
                               args.num_workers)
    feats, labels = penultimate_features(model, loader, args.max_samples)
    classes = loader.dataset.metainfo.get('classes')
    plot_tsne(feats, labels, args.out, classes, args.perplexity, args.seed)
    print(f'wrote {args.out}: t-SNE of {feats.shape[0]} {feats.shape[1]}-d '
          'features')
    return dict(out=args.out, num_samples=int(feats.shape[0]),
                feature_dim=int(feats.shape[1]))


def run_bank(args):
    import_plugin()
    from skd_bnn_mm.analysis import load_soft_label_bank, plot_bank_heatmap
    from skd_bnn_mm.utils import CheckpointError
    try:
        bank, classes, counts = load_soft_label_bank(args.source, args.key)
    except (CheckpointError, KeyError) as e:
        raise SystemExit(f'visualize bank: {e}') from None
    mat = plot_bank_heatmap(bank, args.out, classes, args.temperature,
                            counts)
    print(f'wrote {args.out}: {bank.shape[0]}x{bank.shape[1]} bank')
    return dict(out=args.out, matrix=mat)


def run_sign_agreement(args):
    from skd_bnn_mm.analysis import plot_sign_agreement, sign_agreement
    cfg, model = _model(args)
    loader = build_data_loader(cfg, args.split, args.num_images,
                               args.num_workers)
    batch = next(iter(loader))
    data = model.data_preprocessor(batch, False)
    values = sign_agreement(model, data['inputs'])
    plot_sign_agreement(values, args.out)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(values, f, indent=1)
    mean = sum(values.values()) / len(values)
    print(f'wrote {args.out}: {len(values)} binary convs, mean agreement '
          f'{mean:.3f} on {data["inputs"].shape[0]} images')
    return dict(out=args.out, agreement=values)


def run_curves(args):
    import_plugin()
    from skd_bnn_mm.analysis import (find_scalars, load_scalars,
                                     plot_training_curves)
    if args.labels and len(args.labels) != len(args.logs):
        raise SystemExit(f'--labels needs one label per log: got '
                         f'{len(args.labels)} labels for {len(args.logs)} '
                         'logs')
    runs = {}
    for i, path in enumerate(args.logs):
        try:
            found = find_scalars(path)
        except FileNotFoundError as e:
            raise SystemExit(f'visualize curves: {e}') from None
        label = args.labels[i] if args.labels else (
            path if len(args.logs) > 1 else osp.basename(found))
        runs[label] = load_scalars(found)
    try:
        keys = plot_training_curves(runs, args.out, args.keys)
    except (KeyError, ValueError) as e:
        raise SystemExit(f'visualize curves: {e}') from None
    print(f'wrote {args.out}: {", ".join(keys)}')
    return dict(out=args.out, keys=keys, runs=runs)


COMMANDS = {'tsne': run_tsne, 'bank': run_bank,
            'sign-agreement': run_sign_agreement, 'curves': run_curves}


def main(argv=None):
    args = parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == '__main__':
    main()
