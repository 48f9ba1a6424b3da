"""Train a model from a config (mmpretrain conventions).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]]
        [--amp [fp16|bf16]]
        [--cfg-options key=value ...] [--launcher pytorch|slurm|mpi]
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from tools.common import (apply_launcher, check_config_path,  # noqa: E402
                          import_plugin, run_tool)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a classifier')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models '
                        '(default: ./work_dirs/CONFIG_NAME)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint; without a value, resume from the '
        'latest checkpoint in the work dir (a work dir without checkpoints '
        'starts from the config\'s load_from, or from scratch)')
    parser.add_argument(
        '--amp', nargs='?', const='auto', choices=['auto', 'fp16', 'bf16'],
        help='mixed precision; alone: fp16 with dynamic loss scaling on '
        "CUDA (mmengine's AmpOptimWrapper), bfloat16 on the CPU; "
        '--amp fp16 / --amp bf16 choose (fp16 on the CPU: '
        'AutocastOptimWrapper with torch.amp.GradScaler)')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate checkpoints during training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the actual total batch size')
    parser.add_argument('--no-pin-memory', action='store_true')
    parser.add_argument('--no-persistent-workers', action='store_true')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, as key=value pairs; e.g. '
        'train_cfg.max_epochs=10 "model.backbone.conv_cfg=None"')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='job launcher')
    # torch.distributed.launch passes --local-rank (new) or --local_rank (old)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def apply_amp(cfg, amp='auto'):
    """``--amp [fp16|bf16]``: the optim wrapper of
    ``skd_bnn_mm.engine.optim.amp_optim_wrapper_cfg`` for this device
    (mmengine's AmpOptimWrapper on CUDA/NPU/MLU/MUSA, AutocastOptimWrapper
    elsewhere); a bare ``--amp`` is fp16 there and bf16 on the CPU."""
    from mmengine.device import get_device

    from skd_bnn_mm.engine.optim import amp_optim_wrapper_cfg, config_amp
    device = get_device()
    try:
        wrapper = amp_optim_wrapper_cfg(cfg.optim_wrapper, amp, device)
    except ValueError as err:
        raise SystemExit(f'--amp: {err}') from None
    cfg.optim_wrapper = wrapper
    scale = wrapper.get('loss_scale', None)
    print(f'--amp on {device}: {config_amp(wrapper)} autocast '
          f'({wrapper["type"]}'
          f'{f", loss scale {scale}" if scale is not None else ""}).',
          flush=True)


def merge_args(cfg, args):
    """Fold command-line switches into the config."""
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None

    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        apply_amp(cfg, args.amp)

    if args.resume == 'auto':
        # resume the work dir's newest checkpoint; in a work dir without
        # one, start from the config's load_from (weights) if it has one
        cfg.resume = 'auto'
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True

    def set_loader_flag(name, key, value):
        loader = cfg.get(name, None)
        if loader is not None:
            loader[key] = value

    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if args.no_pin_memory:
            set_loader_flag(name, 'pin_memory', False)
        if args.no_persistent_workers:
            set_loader_flag(name, 'persistent_workers', False)
    apply_launcher(cfg)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    check_config_path(args.config)
    import_plugin()
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg = merge_args(cfg, args)

    from mmengine.runner import Runner
    from mmpretrain.registry import RUNNERS
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    run_tool(main)
