"""Steady-state training throughput of configs, timed on a real Runner.

    python tools/analysis_tools/benchmark.py CONFIG [CONFIG ...]
        [--device cpu|cuda] [--batch-size N] [--iters N] [--warmup N]
        [--rounds R] [--synthetic] [--amp bf16|fp16|none] [--channels-last]
        [--compile] [--num-workers N] [--data-root DIR] [--json OUT]
        [--threads N] [--seed N] [--cfg-options key=value ...]

Each config is trained by the Runner it names (``runner_type``), with
``train_cfg = IterBasedTrainLoop(max_iters=warmup + iters)``, no parameter
scheduler (a constant learning rate), validation, testing and checkpoints
off, and its own hooks, model, optim wrapper and ``compile`` setting. The
figures are ``IterTimerHook``'s ``train/time`` and ``train/data_time`` of the
last ``--iters`` iterations: everything one training iteration costs
(loading, preprocessing, forward, every loss, backward, the optimizer step,
the hooks, the host copy of the logged losses).

Data: the config's ``train_dataloader``, or with ``--synthetic`` the
registered ``SyntheticClsDataset`` (random uint8 images of the training size
in memory) through the config's training pipeline without its loading
transforms, and the config's ``collate_fn``; the difference between the two
is the cost of reading files.

Memory: peak allocated GPU memory on CUDA; on CPU the peak resident memory
of this process during the timed iterations (Linux: the high-water mark is
reset through /proc/self/clear_refs; elsewhere it is the process peak so
far), without dataloader worker processes.

All configs are measured in one process and printed in one table; with
``--rounds R`` every config is run R times, round after round (each run
builds its Runner again and has its own warm-up), and the median run is
shown, so that changes of machine load hit every config alike. An SKD-BNN
config and a non-SKD config with the same backbone get their step-time
ratio. Speed switches (``--amp``, ``--channels-last``, ``--compile``) are
explained in docs/speed.md.

The bundled CIFAR-10 copy needs ``--cfg-options
train_dataloader.dataset.verify_md5=False`` (or CIFAR10_VERIFY_MD5=False).
"""
import argparse
import copy
import json
import logging
import os
import os.path as osp
import platform
import re
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))
from mmengine.hooks import Hook  # noqa: E402

from skd_bnn_mm.engine.optim.amp import (AMP_CHOICES,  # noqa: E402
                                         amp_optim_wrapper_cfg, config_amp)

from tools.analysis_tools._common import (guess_input_shape,  # noqa: E402
                                          load_config)


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Measure training throughput (images/s) of configs')
    parser.add_argument('configs', nargs='+', metavar='CONFIG')
    parser.add_argument('--device', choices=['cpu', 'cuda'],
                        help='default: cuda when available, else cpu')
    parser.add_argument('--batch-size', type=int,
                        help="default: the config's train batch size")
    parser.add_argument('--iters', type=int, default=20,
                        help='timed training steps per config (default 20)')
    parser.add_argument('--warmup', type=int, default=5,
                        help='untimed steps before timing (default 5)')
    parser.add_argument('--rounds', type=int, default=1,
                        help='runs of every config, round after round; '
                        'the median run is reported (default 1)')
    parser.add_argument('--synthetic', action='store_true',
                        help='SyntheticClsDataset (random uint8 images in '
                        "memory) through the config's pipeline instead of "
                        'its train dataset')
    parser.add_argument('--amp', choices=AMP_CHOICES,
                        help="autocast dtype; default: as the config's "
                        'optim_wrapper (none = float32)')
    parser.add_argument('--channels-last', action='store_true',
                        help='channels-last layout (see FastPathHook)')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the train step (slow to start)')
    parser.add_argument('--num-workers', type=int,
                        help="dataloader workers; default: the config's")
    parser.add_argument('--data-root',
                        help='data_root of the train dataset (real data)')
    parser.add_argument('--threads', type=int,
                        help='CPU threads for torch (torch.set_num_threads); '
                        'on a shared machine 1 thread per free core avoids '
                        'threads waiting on each other')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', help='write the results to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of every config')
    args = parser.parse_args(argv)
    for name in ('iters', 'warmup', 'batch_size', 'num_workers', 'threads',
                 'rounds'):
        value = getattr(args, name)
        low = 0 if name in ('warmup', 'num_workers') else 1
        if value is not None and value < low:
            parser.error(f'--{name.replace("_", "-")} must be >= {low}, '
                         f'got {value}')
    return args


# ---------------------------------------------------------------- options
def config_options(cfg, args):
    """Speed options of one run: the command line, else the config."""
    hooks = [h for h in cfg.get('custom_hooks', None) or []
             if h.get('type') == 'FastPathHook']
    channels_last = args.channels_last or any(
        h.get('channels_last', False) for h in hooks)
    compile_cfg = cfg.get('compile', None)
    if args.compile:
        compile_cfg = compile_cfg if isinstance(compile_cfg, dict) else {}
    elif not compile_cfg:
        compile_cfg = None
    elif compile_cfg is True:
        compile_cfg = {}
    amp = args.amp
    if amp is None:
        amp = config_amp(cfg.optim_wrapper)
    return dict(channels_last=channels_last, compile_cfg=compile_cfg,
                amp=amp)


def optim_wrapper_cfg(cfg, amp, device):
    """The config's ``optim_wrapper``; converted only for an explicit
    ``--amp`` (``amp`` not None)."""
    base = cfg.optim_wrapper
    base = base.to_dict() if hasattr(base, 'to_dict') else dict(base)
    return base if amp is None else amp_optim_wrapper_cfg(base, amp, device)


# ---------------------------------------------------------------- config
def model_kind(model):
    """``'skd-bnn'``, ``'binary'`` (IRConv2d, no SKD) or ``'fp'``."""
    from skd_bnn_mm.models.classifiers import SKDImageClassifier
    from skd_bnn_mm.models.layers import IRConv2d
    model = getattr(model, 'module', model)  # a DDP wrapper's model
    if isinstance(model, SKDImageClassifier):
        return 'skd-bnn'
    if any(isinstance(m, IRConv2d) for m in model.modules()):
        return 'binary'
    return 'fp'


def backbone_key(cfg):
    """Canonical text of the backbone config, for pairing runs."""
    backbone = cfg.model.get('backbone', None)
    backbone = backbone.to_dict() if hasattr(backbone, 'to_dict') \
        else backbone
    return json.dumps(backbone, sort_keys=True, default=str)


def num_classes_of(cfg):
    for value in ((cfg.model.get('head', None) or {}).get('num_classes'),
                  (cfg.get('data_preprocessor', None) or {}).get(
                      'num_classes', None)):
        if isinstance(value, int) and value > 0:
            return value
    return 10


def train_pipeline(cfg):
    """The training dataset's transforms (looking through dataset wrappers:
    ``dataset=...`` / ``datasets=[...]``) without the loading ones, which
    have no file to read on synthetic data."""
    dataset = (cfg.get('train_dataloader', None) or {}).get('dataset', None)
    while isinstance(dataset, dict) and not dataset.get('pipeline'):
        inner = dataset.get('dataset', None)
        if inner is None and dataset.get('datasets'):
            inner = dataset['datasets'][0]
        dataset = inner
    steps = dataset.get('pipeline') if isinstance(dataset, dict) else None
    return [copy.deepcopy(t) for t in steps or []
            if not (isinstance(t, dict)
                    and str(t.get('type', '')).startswith('Load'))]


def runner_cfg(cfg, args, device, work_dir, name):
    """``cfg`` made into a benchmark run: ``warmup + iters`` iterations,
    nothing else (see the module docstring)."""
    batch_size = args.batch_size or (
        cfg.get('train_dataloader', None) or {}).get('batch_size', None)
    if not batch_size:
        raise SystemExit(f'{name} sets no train_dataloader.batch_size; '
                         'give --batch-size.')
    if cfg.get('train_dataloader', None) is None:
        raise SystemExit(f'{name} has no train_dataloader.')
    opts = config_options(cfg, args)
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = work_dir
    cfg.experiment_name = f'benchmark_{name}_{uuid.uuid4().hex[:8]}'
    cfg.log_level = 'WARNING'
    cfg.load_from, cfg.resume = None, False
    cfg.randomness = dict(seed=args.seed)
    cfg.train_cfg = dict(type='IterBasedTrainLoop',
                         max_iters=args.warmup + args.iters,
                         val_interval=10**9)
    cfg.param_scheduler = None
    for key in ('val', 'test'):
        for part in ('dataloader', 'cfg', 'evaluator'):
            cfg[f'{key}_{part}'] = None
    cfg.default_hooks = dict(cfg.get('default_hooks', None) or {},
                             checkpoint=None,
                             logger=dict(type='LoggerHook', interval=10**9))
    cfg.log_processor = dict(by_epoch=False)
    cfg.custom_hooks = list(cfg.get('custom_hooks', None) or [])
    if args.channels_last and not any(
            h.get('type') == 'FastPathHook' for h in cfg.custom_hooks):
        cfg.custom_hooks.append(dict(type='FastPathHook',
                                     channels_last=True))
    cfg.compile = opts['compile_cfg']
    cfg.optim_wrapper = optim_wrapper_cfg(cfg, args.amp, device)

    loader = cfg.train_dataloader
    loader.batch_size = batch_size
    # an epoch end of a finite sampler costs IterBasedTrainLoop a 2 s pause
    loader.sampler = dict(type='InfiniteSampler', shuffle=bool(
        (loader.get('sampler', None) or {}).get('shuffle', True)))
    if args.synthetic:
        loader.dataset = dict(
            type='SyntheticClsDataset', num_samples=2 * batch_size,
            img_shape=guess_input_shape(cfg),
            num_classes=num_classes_of(cfg), seed=args.seed,
            pipeline=train_pipeline(cfg))
        loader.num_workers = 0
    elif args.data_root is not None:
        loader.dataset.data_root = args.data_root
    if args.num_workers is not None:
        loader.num_workers = args.num_workers
    if loader.get('num_workers', 0) == 0:
        loader.persistent_workers = False
    info = dict(
        backbone=backbone_key(cfg), device=device, batch_size=batch_size,
        iters=args.iters, warmup=args.warmup, amp=opts['amp'],
        channels_last=opts['channels_last'],
        compile=opts['compile_cfg'] is not None,
        data='synthetic' if args.synthetic else 'loader',
        num_workers=loader.get('num_workers', 0))
    return cfg, info


# ---------------------------------------------------------------- memory
_HWM = re.compile(r'VmHWM:\s+(\d+)\s+kB')


def _reset_rss_peak():
    """Reset this process's RSS high-water mark; True if it worked."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _rss_peak_mib():
    try:
        with open('/proc/self/status') as f:
            match = _HWM.search(f.read())
        if match:
            return int(match.group(1)) / 1024
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == 'darwin' else peak / 1024


class MemoryWindowHook(Hook):
    """The peak memory of the timed iterations (those after the warm-up)."""

    def __init__(self, warmup, cuda):
        self.warmup, self.cuda = warmup, cuda
        self.peak_mib, self.kind = None, None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter != self.warmup:
            return
        import torch
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.kind = 'gpu_allocated'
        else:
            self.kind = 'host_rss_' + ('window' if _reset_rss_peak()
                                       else 'process')

    def after_train(self, runner):
        import torch
        self.peak_mib = (torch.cuda.max_memory_allocated() / 2**20
                         if self.cuda else _rss_peak_mib())


# ---------------------------------------------------------------- timing
def run_once(path, args, device):
    """One Runner run of config ``path``; its timed window."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    cfg = load_config(path, args.cfg_options)
    name = osp.splitext(osp.basename(path))[0]
    with tempfile.TemporaryDirectory(prefix='benchmark_') as work_dir:
        cfg, info = runner_cfg(cfg, args, device, work_dir, name)
        runner = (RUNNERS.build(cfg) if 'runner_type' in cfg
                  else Runner.from_cfg(cfg))
        memory = MemoryWindowHook(args.warmup, device == 'cuda')
        runner.register_hook(memory, 'VERY_LOW')
        runner.train()
        hub = runner.message_hub
        times = hub.get_scalar('train/time').data[0][-args.iters:]
        data = hub.get_scalar('train/data_time').data[0][-args.iters:]
        losses = {k[len('train/'):]: float(v.current())
                  for k, v in hub.log_scalars.items()
                  if k.startswith('train/loss')}
        kind = model_kind(runner.model)
        del runner
    step_ms = [1e3 * float(t) for t in times]
    return dict(info, config=path, name=name, kind=kind,
                ms_per_step=statistics.fmean(step_ms),
                ms_per_step_median=statistics.median(step_ms),
                data_ms_per_step=1e3 * statistics.fmean(
                    float(t) for t in data),
                peak_mem_mib=memory.peak_mib, mem_kind=memory.kind,
                step_ms=step_ms, last_losses=losses)


def run_configs(paths, args, device):
    """Every config ``--rounds`` times, round after round; per config the
    median run (by step time) with every run's step time."""
    runs = {path: [] for path in paths}
    for _ in range(args.rounds):
        for path in paths:
            runs[path].append(run_once(path, args, device))
    results = []
    for path in paths:
        windows = sorted(runs[path], key=lambda w: w['ms_per_step'])
        mid = windows[(len(windows) - 1) // 2]
        bad = [k for k, v in mid['last_losses'].items() if v != v
               or v in (float('inf'), float('-inf'))]
        if bad:
            print(f'warning: {path}: non-finite {", ".join(bad)} in the '
                  'last step', file=sys.stderr)
        results.append(dict(
            mid, rounds=len(windows),
            images_per_s=1e3 * mid['batch_size'] / mid['ms_per_step'],
            peak_mem_mib=max(w['peak_mem_mib'] for w in windows),
            round_ms_per_step=[w['ms_per_step'] for w in runs[path]]))
    return results


def pair_ratios(results):
    """SKD-BNN runs against non-SKD runs of the same backbone and settings.

    The step-time ratio is the median over rounds of the ratio within a
    round (with one round: the ratio of the two step times); the throughput
    ratio is its inverse (same batch size).
    """
    same = ('backbone', 'device', 'batch_size', 'amp', 'channels_last',
            'compile', 'data')
    ratios = []
    for skd in results:
        if skd['kind'] != 'skd-bnn':
            continue
        for base in results:
            if base['kind'] == 'skd-bnn' or any(base[k] != skd[k]
                                                for k in same):
                continue
            # round i of both ran close in time, under similar load: the
            # median of the per-round ratios is the robust figure
            per_round = [a / b for a, b in zip(skd['round_ms_per_step'],
                                               base['round_ms_per_step'])]
            ratio = statistics.median(per_round)
            ratios.append(dict(
                skd=skd['name'], base=base['name'], base_kind=base['kind'],
                step_time_ratio=ratio, throughput_ratio=1 / ratio,
                round_step_time_ratios=per_round))
    return ratios


def format_table(results):
    head = ['config', 'kind', 'batch', 'amp', 'layout', 'data', 'img/s',
            'ms/step', 'p50 ms', 'data ms', 'peak MiB']
    rows = [[r['name'], r['kind'], str(r['batch_size']), r['amp'],
             'NHWC' if r['channels_last'] else 'NCHW',
             r['data'] + (' +compile' if r['compile'] else ''),
             f"{r['images_per_s']:.1f}", f"{r['ms_per_step']:.1f}",
             f"{r['ms_per_step_median']:.1f}",
             f"{r['data_ms_per_step']:.1f}", f"{r['peak_mem_mib']:.0f}"]
            for r in results]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    left = {0, 1, 3, 4, 5}

    def line(cells):
        return '| ' + ' | '.join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))) + ' |'

    out = [line(head),
           '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
    return '\n'.join(out + [line(r) for r in rows])


def device_description(device):
    import torch
    if device == 'cuda':
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            match = re.search(r'model name\s*:\s*(.*)', f.read())
        if match:
            name = match.group(1).strip()
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f'{name}, {threads} thread' + ('s' if threads != 1 else '')


def main(argv=None):
    args = parse_args(argv)
    if args.device == 'cpu':
        # the Runner puts the model on CUDA whenever it sees a device
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
    import torch
    from mmengine.logging import MMLogger

    import skd_bnn_mm  # noqa: F401  (registers the plugin's modules)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if args.threads:
        torch.set_num_threads(args.threads)
    if device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda, but CUDA is not available; use '
                         '--device cpu.')
    # keep the weight-init report and other INFO logs out of the table
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    load_before = os.getloadavg() if hasattr(os, 'getloadavg') else None
    try:
        results = run_configs(args.configs, args, device)
    finally:
        logger.setLevel(level)
    load_after = os.getloadavg() if hasattr(os, 'getloadavg') else None
    ratios = pair_ratios(results)

    rounds = (f' x {args.rounds} rounds (median run shown)'
              if args.rounds > 1 else '')
    print(f'\nTraining throughput on {device} ({device_description(device)})'
          f', torch {torch.__version__}; Runner, {args.warmup} warm-up + '
          f'{args.iters} timed iterations per config{rounds}'
          + (f'; load average {load_before[0]:.2f} -> {load_after[0]:.2f}'
             if load_before else ''))
    print(format_table(results))
    note = {'gpu_allocated': 'peak MiB: peak allocated GPU memory',
            'host_rss_window': 'peak MiB: peak RSS of this process during '
                               'the timed iterations',
            'host_rss_process': 'peak MiB: peak RSS of this process so far '
                                '(could not be reset per config)'}
    print(note[results[0]['mem_kind']] + '.')
    for r in ratios:
        spread = ''
        if len(r['round_step_time_ratios']) > 1:
            spread = ' (rounds: ' + ', '.join(
                f'{x:.2f}' for x in r['round_step_time_ratios']) + ')'
        print(f"{r['skd']} vs {r['base']} (same backbone): step time "
              f"x{r['step_time_ratio']:.2f}, images/s "
              f"x{r['throughput_ratio']:.2f}{spread}")
    if args.json:
        record = dict(
            meta=dict(device=device, device_name=device_description(device),
                      torch=torch.__version__, argv=list(sys.argv[1:])
                      if argv is None else list(argv),
                      loadavg_before=load_before, loadavg_after=load_after,
                      time=time.strftime('%Y-%m-%d %H:%M:%S')),
            results=results, ratios=ratios)
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(record, f, indent=1)
        print(f'results written to {args.json}')
    return results, ratios


if __name__ == '__main__':
    main()
