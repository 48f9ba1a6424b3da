"""Evaluate a checkpoint, with mmpretrain 1.2.0's command line.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR]
        [--out FILE.pkl [--out-item pred|metrics]] [--amp]
        [--show-dir DIR] [--show] [--interval N] [--wait-time S]
        [--tta] [--no-pin-memory] [--cfg-options key=value ...]
        [--launcher none|pytorch|slurm|mpi]

``--out FILE.pkl`` pickles the predictions (one dict per image:
``pred_score``, ``pred_label``, ``gt_label``, ``sample_idx``, ...), the file
that mmpretrain's ``tools/analysis_tools/eval_metric.py``,
``confusion_matrix.py`` and ``analyze_results.py`` read; ``--out-item
metrics`` writes the metrics instead (also the default for an ``--out``
that is not ``.pkl``/``.pickle``, e.g. ``metrics.json``).

Differences from mmpretrain's tool: the checkpoint is read with the
project's safe loader and must fit the config's model exactly (a checkpoint
of another ``num_classes`` or backbone is refused with the differing keys,
where mmengine would load it partly and report the accuracy of a random
head), and so must the test labels (``check_labels_fit``); distributed runs
work without CUDA (gloo).
"""
import argparse
import os
import os.path as osp
import sys
from copy import deepcopy

from mmengine.config import Config, ConfigDict, DictAction

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from tools.common import (apply_launcher, check_config_path,  # noqa: E402
                          import_plugin, run_tool)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a classifier')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument('--out', help='the file to write the predictions '
                        '(or, with --out-item metrics, the metrics) to')
    parser.add_argument('--out-item', choices=['metrics', 'pred'],
                        help='what --out writes (default: pred)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, as key=value '
                        'pairs')
    parser.add_argument('--amp', action='store_true',
                        help='test with automatic mixed precision')
    parser.add_argument('--show-dir', help='save the images with their '
                        'predictions to this folder')
    parser.add_argument('--show', action='store_true',
                        help='show the images with their predictions')
    parser.add_argument('--interval', type=int, default=1,
                        help='visualise every N-th sample')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each shown image stays')
    parser.add_argument('--no-pin-memory', action='store_true',
                        help='disable pin_memory in the test dataloader')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation: the config\'s '
                        'tta_pipeline/tta_model, else the mean score of the '
                        'image and its horizontal flip')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg, args):
    """Apply the command line to the config (mmpretrain's semantics)."""
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.amp:
        cfg.test_cfg = dict(cfg.get('test_cfg') or {}, fp16=True)

    if args.show or args.show_dir is not None:
        vis = (cfg.get('default_hooks') or {}).get('visualization')
        if vis is None:
            raise SystemExit(
                '--show/--show-dir need a VisualizationHook: add '
                "default_hooks=dict(visualization=dict(type="
                "'VisualizationHook')) to the config.")
        vis.update(enable=True, show=args.show, wait_time=args.wait_time,
                   out_dir=args.show_dir, interval=args.interval)

    if args.tta:
        if 'tta_model' not in cfg:
            cfg.tta_model = dict(type='mmpretrain.AverageClsScoreTTA')
        if 'tta_pipeline' not in cfg:
            pipeline = cfg.test_dataloader.dataset.pipeline
            cfg.tta_pipeline = deepcopy(pipeline)
            cfg.tta_pipeline[-1] = dict(
                type='TestTimeAug',
                transforms=[[dict(type='RandomFlip', prob=1.),
                             dict(type='RandomFlip', prob=0.)],
                            [pipeline[-1]]])
        cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline

    if cfg.get('test_dataloader', None) is not None:
        loader = ConfigDict(pin_memory=True,
                            collate_fn=dict(type='default_collate'))
        loader.update(cfg.test_dataloader)
        if args.no_pin_memory:
            loader.pin_memory = False
        cfg.test_dataloader = loader

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def checkpoint_mismatches(model, checkpoint_path, limit=8):
    """Keys and shapes in which the checkpoint's weights differ from
    ``model``'s (read with the safe loader); empty when they fit."""
    from skd_bnn_mm.utils import load_checkpoint_file
    ckpt = load_checkpoint_file(checkpoint_path, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        return [f'no state_dict (a {type(ckpt).__name__})']
    state = {k[len('module.'):] if k.startswith('module.') else k: v
             for k, v in state.items()}
    own = model.state_dict()
    problems = []
    for key, value in own.items():
        if key not in state:
            problems.append(f'missing in checkpoint: {key}')
        elif tuple(getattr(state[key], 'shape', ())) != tuple(value.shape):
            problems.append(f'{key}: checkpoint '
                            f'{tuple(state[key].shape)} vs model '
                            f'{tuple(value.shape)}')
    problems += [f'not in model: {k}' for k in state if k not in own]
    if len(problems) > limit:
        problems = problems[:limit] + [f'... and {len(problems) - limit} '
                                       'more']
    return problems


def main(argv=None):
    args = parse_args(argv)
    if args.out is None and args.out_item is not None:
        raise SystemExit('--out-item needs --out (the file to write).')
    pickled = args.out is not None and args.out.endswith(('.pkl', '.pickle'))
    if args.out is not None and args.out_item is None:
        # mmpretrain: predictions; they are pickled, so another suffix
        # (.json, .yaml) gets the metrics
        args.out_item = 'pred' if pickled else 'metrics'
    if args.out_item == 'pred' and not pickled:
        raise SystemExit(f'--out {args.out}: predictions are written as a '
                         'pickle; name the file *.pkl (or use --out-item '
                         'metrics).')
    check_config_path(args.config)
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'Checkpoint "{args.checkpoint}" does not exist.')
    import_plugin()
    cfg = merge_args(Config.fromfile(args.config), args)
    apply_launcher(cfg)

    from mmengine.evaluator import DumpResults
    from mmengine.runner import Runner
    from mmpretrain.registry import RUNNERS
    runner = (Runner.from_cfg(cfg) if 'runner_type' not in cfg else
              RUNNERS.build(cfg))

    # mmengine loads load_from leniently: refuse a checkpoint of another
    # model before anything is evaluated
    model = runner.model
    while hasattr(model, 'module'):  # DDP and TTA wrappers
        model = model.module
    problems = checkpoint_mismatches(model, args.checkpoint)
    if problems:
        raise SystemExit(
            f'Checkpoint "{args.checkpoint}" does not fit the model of '
            f'{args.config}: ' + '; '.join(problems) + '. Test with the '
            'config it was trained with (same backbone and num_classes); '
            'nothing was evaluated.')

    from skd_bnn_mm.datasets import check_labels_fit, model_num_classes
    try:  # builds the test loop (and dataset) that runner.test() runs
        check_labels_fit(runner.test_loop.dataloader.dataset,
                         model_num_classes(model))
    except ValueError as e:
        raise SystemExit(f'{e} Nothing was evaluated.') from None

    if args.out_item == 'pred':
        runner.test_evaluator.metrics.append(
            DumpResults(out_file_path=args.out))
    metrics = runner.test()
    if args.out_item == 'metrics':
        import mmengine
        mmengine.dump(metrics, args.out)
    return metrics


if __name__ == '__main__':
    run_tool(main)
