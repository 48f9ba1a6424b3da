"""Convert a checkpoint of the SKD-BNN authors' code to an mmengine one.

    python tools/model_converters/skd_bnn_official_to_mm.py SRC DST \
        --model MODEL [--config CONFIG]

MODEL: resnet20_cifar10, vgg-small_cifar10, resnet18_cifar10 or
resnet18_imagenet (the authors' resnet20_1w1a, vgg_small_1w1a, ResNet18,
resnet18).

SRC is one of their files (``{'epoch', 'best_prec1', 'state_dict'}`` saved
from DataParallel on a GPU, or a bare ``state_dict``); it is read with
``weights_only=True`` on the CPU. DST gets ``state_dict`` + ``meta`` (the
source's sha256, epoch and best_prec1) and loads strictly into the matching
SKD-BNN config with ``load_from`` or ``tools/test.py``. With ``--config`` the
weights are made for the model that config builds (an IR-Net config, say)
and loaded into it strictly as a check. On any error nothing is written.
The mapping lives in ``skd_bnn_mm.models.utils.official_weights``.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))
from tools.common import import_plugin  # noqa: E402

MODELS = ('resnet20_cifar10', 'vgg-small_cifar10', 'resnet18_cifar10',
          'resnet18_imagenet')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an SKD-BNN authors\' checkpoint to skd_bnn_mm')
    parser.add_argument('src', help='the authors\' checkpoint (.th)')
    parser.add_argument('dst', help='output checkpoint (.pth)')
    parser.add_argument('--model', required=True, choices=MODELS,
                        help='network of the source checkpoint')
    parser.add_argument('--config', help='check against (and fit to) the '
                        'model of this config')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import_plugin()
    from skd_bnn_mm.models.utils import convert_official_checkpoint
    if args.config is not None and not osp.isfile(args.config):
        raise SystemExit(f'Error: config "{args.config}" does not exist.')
    try:
        meta = convert_official_checkpoint(args.src, args.dst, args.model,
                                           config=args.config)
    except ValueError as e:
        raise SystemExit(f'Error: {e}\nNothing was written to {args.dst}.')
    info = meta['official']
    print(f'{args.src} -> {args.dst}')
    print(f'  {info["tensors"]} tensors of {info["source_arch"]} '
          f'(sha256 {info["sha256"]}), epoch {info["epoch"]}, '
          f'best_prec1 {info["best_prec1"]}')
    ede = info['ede']
    if ede:
        print(f'  EDE of {ede["layers"]} IRConv2d: k={ede["k"]:.6g} '
              f't={ede["t"]:.6g} (recipe schedule at epoch {ede["epoch"]} '
              f'of {ede["max_epochs"]})')
    if info['defaults']:
        print(f'  left at defaults: {info["defaults"]}')
    if args.config:
        print(f'  loads strictly into the model of {args.config}')
    return meta


if __name__ == '__main__':
    main()
