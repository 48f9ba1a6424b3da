"""Steady-state training throughput of configs, through the real train step.

    python tools/analysis_tools/benchmark.py CONFIG [CONFIG ...]
        [--device cpu|cuda] [--batch-size N] [--iters N] [--warmup N]
        [--rounds R] [--synthetic] [--amp bf16|fp16|none] [--channels-last]
        [--compile] [--num-workers N] [--data-root DIR] [--json OUT]
        [--threads N] [--seed N] [--cfg-options key=value ...]

Each config's model is built as the Runner builds it (the config's
``data_preprocessor`` merged into the model, ``init_weights()``), with the
config's ``optim_wrapper``, and timed through ``model.train_step(data,
optim_wrapper)``: preprocessing, forward, every loss, backward and the
optimizer step. After each step the loss values are copied to the host, as
mmengine's ``RuntimeInfoHook`` does in training. ``--warmup`` steps are run
first and not timed.

Data: the config's ``train_dataloader`` (its pipeline and workers; the time
spent waiting for batches is reported apart), or with ``--synthetic`` random
uint8 images of the training image size fed through the same data
preprocessor, which separates loader cost from model cost.

Memory: peak allocated GPU memory on CUDA; on CPU the peak resident memory
of this process during the timed steps (Linux: the high-water mark is reset
per timed window through /proc/self/clear_refs; elsewhere it is the process
peak so far), without dataloader worker processes.

All configs are measured in one process and printed in one table: one after
the other, or with ``--rounds R`` in R interleaved timed windows (median
window shown), so that changes of machine load hit every config alike. An
SKD-BNN config and a non-SKD config with the same backbone get their
step-time ratio. Speed switches (``--amp``, ``--channels-last``,
``--compile``) are explained in docs/speed.md; a ``FastPathHook`` in the
config's ``custom_hooks`` and ``compile=True`` in the config apply as well.

The bundled CIFAR-10 copy needs ``--cfg-options
train_dataloader.dataset.verify_md5=False`` (or CIFAR10_VERIFY_MD5=False).
"""
import argparse
import itertools
import json
import logging
import math
import os
import os.path as osp
import platform
import re
import statistics
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))
from tools.analysis_tools._common import (guess_input_shape,  # noqa: E402
                                          load_config)

AMP_CHOICES = ('none', 'bf16', 'fp16')


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
                        help='timed windows of --iters steps per config, '
                        'interleaved across configs; the median window is '
                        'reported (default 1)')
    parser.add_argument('--synthetic', action='store_true',
                        help='random uint8 images through the data '
                        'preprocessor instead of the train dataloader')
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
        kind = cfg.optim_wrapper.get('type', 'OptimWrapper')
        dtype = str(cfg.optim_wrapper.get('dtype', None))
        if kind == 'AutocastOptimWrapper' or (kind == 'AmpOptimWrapper'
                                              and 'bfloat16' in dtype):
            amp = 'bf16'
        elif kind == 'AmpOptimWrapper':
            amp = 'fp16'
        else:
            amp = 'none'
    return dict(channels_last=channels_last, compile_cfg=compile_cfg,
                amp=amp)


def optim_wrapper_cfg(cfg, amp, device):
    """The config's ``optim_wrapper``; converted only for an explicit
    ``--amp`` (``amp`` not None)."""
    from skd_bnn_mm.engine.fast import amp_optim_wrapper_cfg
    base = cfg.optim_wrapper
    base = base.to_dict() if hasattr(base, 'to_dict') else dict(base)
    return base if amp is None else amp_optim_wrapper_cfg(base, amp, device)


# ---------------------------------------------------------------- building
def build_model(cfg, device, channels_last):
    """The model as mmengine's Runner builds it, on ``device``."""
    import copy

    import torch
    from mmpretrain.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor', None) is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(model_cfg)
    model.init_weights()
    model.to(torch.device(device))
    if channels_last:
        from skd_bnn_mm.engine.fast import to_channels_last
        to_channels_last(model)
    return model.train()


def model_kind(model):
    """``'skd-bnn'``, ``'binary'`` (IRConv2d, no SKD) or ``'fp'``."""
    from skd_bnn_mm.models.classifiers import SKDImageClassifier
    from skd_bnn_mm.models.layers import IRConv2d
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


def num_classes_of(cfg, model):
    for value in (getattr(getattr(model, 'head', None), 'num_classes', None),
                  (cfg.get('data_preprocessor', None) or {}).get(
                      'num_classes', None)):
        if isinstance(value, int) and value > 0:
            return value
    return 10


def synthetic_batches(cfg, shape, batch_size, num_classes, seed, count=2):
    """``count`` batches of random uint8 images in the form the train loader
    gives: each image goes through the config's training pipeline where it
    can (a pipeline that starts by reading files cannot: then the images are
    packed as they are) and the batch is put together by the config's
    ``collate_fn``, so the data preprocessor does the same work as in
    training (e.g. the batched crop and flip of ``DeferredCropFlip``)."""
    import numpy as np
    import torch
    from mmpretrain.structures import DataSample
    gen = torch.Generator().manual_seed(seed)
    collate = build_collate_fn(cfg)
    pipeline = build_train_pipeline(cfg)
    np_state = np.random.get_state()
    np.random.seed(seed)
    batches = []
    try:
        for _ in range(count):
            images = torch.randint(0, 256, (batch_size, *shape),
                                   generator=gen, dtype=torch.uint8)
            labels = torch.randint(0, num_classes, (batch_size, ),
                                   generator=gen)
            samples = None
            if pipeline is not None:
                try:
                    samples = [
                        pipeline(dict(img=img.permute(1, 2, 0).numpy(),
                                      gt_label=int(y), sample_idx=i,
                                      img_shape=tuple(shape[1:]),
                                      ori_shape=tuple(shape[1:])))
                        for i, (img, y) in enumerate(zip(images, labels))
                    ]
                except Exception as exc:  # e.g. LoadImageFromFile
                    print(f'synthetic data: the training pipeline cannot '
                          f'run on in-memory images ({type(exc).__name__}: '
                          f'{exc}); the images are packed without it.')
                    pipeline, samples = None, None
            if samples is None:
                samples = [
                    dict(inputs=img,
                         data_samples=DataSample().set_gt_label(int(y)))
                    for img, y in zip(images, labels)
                ]
            batches.append(collate(samples))
    finally:
        np.random.set_state(np_state)
    return batches


def build_collate_fn(cfg):
    """The train loader's ``collate_fn``, built as mmengine's Runner does."""
    from functools import partial

    import mmengine.dataset  # noqa: F401  (registers the collate functions)
    from mmengine.registry import FUNCTIONS
    collate_cfg = dict(cfg.get('train_dataloader', None) or {}).get(
        'collate_fn', None) or dict(type='pseudo_collate')
    if callable(collate_cfg):
        return collate_cfg
    collate_cfg = dict(collate_cfg)
    name = fn = collate_cfg.pop('type')
    if isinstance(fn, str):
        fn = FUNCTIONS.get(fn)
        if fn is None:
            raise SystemExit(f'Unknown collate_fn type {name!r} in '
                             f'train_dataloader (e.g. default_collate, '
                             f'pseudo_collate).')
    return partial(fn, **collate_cfg)


def build_train_pipeline(cfg):
    """The training dataset's pipeline (mmpretrain transforms), looking
    through dataset wrappers (``dataset=...``/``datasets=[...]``), or None
    when the config has none."""
    from mmcv.transforms import Compose
    from mmpretrain.registry import TRANSFORMS
    dataset = (cfg.get('train_dataloader', None) or {}).get('dataset', None)
    while isinstance(dataset, dict) and not dataset.get('pipeline'):
        inner = dataset.get('dataset', None)
        if inner is None and dataset.get('datasets'):
            inner = dataset['datasets'][0]
        dataset = inner
    steps = dataset.get('pipeline') if isinstance(dataset, dict) else None
    if not steps:
        return None
    return Compose([TRANSFORMS.build(dict(t)) if isinstance(t, dict)
                    else t for t in steps])


def loader_batches(cfg, batch_size, num_workers, data_root, seed):
    """Endless iterator over the config's train dataloader."""
    import copy

    from mmengine.runner import Runner
    if cfg.get('train_dataloader', None) is None:
        raise SystemExit('The config has no train_dataloader; use '
                         '--synthetic.')
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    loader_cfg['batch_size'] = batch_size
    if num_workers is not None:
        loader_cfg['num_workers'] = num_workers
    if loader_cfg.get('num_workers', 0) == 0:
        loader_cfg['persistent_workers'] = False
    if data_root is not None:
        loader_cfg['dataset']['data_root'] = data_root
    loader = Runner.build_dataloader(loader_cfg, seed=seed)
    while True:
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise SystemExit('The train dataloader is empty.')


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


# ---------------------------------------------------------------- timing
class ConfigBench:
    """One config's model, optimizer wrapper and batches, ready to time."""

    def __init__(self, path, args, device):
        import torch
        from mmengine.optim import build_optim_wrapper
        from mmengine.registry import init_default_scope

        cfg = load_config(path, args.cfg_options)
        init_default_scope(cfg.get('default_scope', 'mmpretrain'))
        self.path, self.args, self.device = path, args, device
        self.opts = config_options(cfg, args)
        self.batch_size = args.batch_size or (
            cfg.get('train_dataloader', None) or {}).get('batch_size', None)
        if not self.batch_size:
            raise SystemExit(f'{path} sets no train_dataloader.batch_size; '
                             'give --batch-size.')
        torch.manual_seed(args.seed)
        self.model = build_model(cfg, device, self.opts['channels_last'])
        self.optim_wrapper = build_optim_wrapper(
            self.model, optim_wrapper_cfg(cfg, args.amp, device))
        if self.opts['compile_cfg'] is not None:
            # as in training (SafeRunner): the optimizer step uncompiled
            from skd_bnn_mm.engine.fast import (
                compile_train_step, keep_optimizer_step_uncompiled)
            compile_train_step(self.model, self.opts['compile_cfg'])
            keep_optimizer_step_uncompiled(self.optim_wrapper)
        if args.synthetic:
            pool = synthetic_batches(cfg, guess_input_shape(cfg),
                                     self.batch_size,
                                     num_classes_of(cfg, self.model),
                                     args.seed)
            self.batches = itertools.cycle(pool)
            self.workers = 0
        else:
            self.batches = loader_batches(cfg, self.batch_size,
                                          args.num_workers, args.data_root,
                                          args.seed)
            self.workers = args.num_workers if args.num_workers is not None \
                else cfg.train_dataloader.get('num_workers', 0)
        self.info = dict(
            config=path,
            name=osp.splitext(osp.basename(path))[0],
            kind=model_kind(self.model),
            backbone=backbone_key(cfg),
            device=device,
            batch_size=self.batch_size,
            iters=args.iters,
            warmup=args.warmup,
            amp=self.opts['amp'],
            channels_last=self.opts['channels_last'],
            compile=self.opts['compile_cfg'] is not None,
            data='synthetic' if args.synthetic else 'loader',
            num_workers=self.workers)
        self.windows = []
        self.losses = {}
        for _ in range(args.warmup):
            self._step()

    def _step(self):
        t0 = time.perf_counter()
        data = next(self.batches)
        t1 = time.perf_counter()
        log_vars = self.model.train_step(data, self.optim_wrapper)
        # the host copy RuntimeInfoHook makes of every logged value
        self.losses = {k: v.item() if hasattr(v, 'item') else float(v)
                       for k, v in log_vars.items()}
        return t1 - t0, time.perf_counter() - t0

    def measure(self):
        """Time ``--iters`` steps; one window of results."""
        import torch
        cuda = self.device == 'cuda'
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            rss_scope = None
        else:
            rss_scope = 'window' if _reset_rss_peak() else 'process'
        data_s, step_s = [], []
        start = time.perf_counter()
        for _ in range(self.args.iters):
            wait, total = self._step()
            data_s.append(wait)
            step_s.append(total)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if cuda:
            peak, mem_kind = (torch.cuda.max_memory_allocated() / 2**20,
                              'gpu_allocated')
        else:
            peak, mem_kind = _rss_peak_mib(), f'host_rss_{rss_scope}'
        window = dict(ms_per_step=1e3 * elapsed / self.args.iters,
                      ms_per_step_median=1e3 * statistics.median(step_s),
                      data_ms_per_step=1e3 * sum(data_s) / self.args.iters,
                      peak_mem_mib=peak, mem_kind=mem_kind,
                      step_ms=[1e3 * t for t in step_s])
        self.windows.append(window)
        return window

    def result(self):
        """Summary over the timed windows: the median window by step time."""
        windows = sorted(self.windows, key=lambda w: w['ms_per_step'])
        mid = windows[(len(windows) - 1) // 2]
        bad = [k for k, v in self.losses.items() if not math.isfinite(v)]
        if bad:
            print(f'warning: {self.path}: non-finite {", ".join(bad)} in '
                  'the last step', file=sys.stderr)
        return dict(
            self.info,
            rounds=len(self.windows),
            images_per_s=1e3 * self.batch_size / mid['ms_per_step'],
            ms_per_step=mid['ms_per_step'],
            ms_per_step_median=mid['ms_per_step_median'],
            data_ms_per_step=mid['data_ms_per_step'],
            peak_mem_mib=max(w['peak_mem_mib'] for w in self.windows),
            mem_kind=mid['mem_kind'],
            round_ms_per_step=[w['ms_per_step'] for w in self.windows],
            last_losses=dict(self.losses),
            step_ms=mid['step_ms'])


def run_configs(paths, args, device):
    """Time every config; with ``--rounds R > 1`` all models are built first
    and their timed windows interleave, so that a change of machine load
    hits every config alike."""
    if args.rounds == 1:
        results = []
        for path in paths:
            bench = ConfigBench(path, args, device)
            bench.measure()
            results.append(bench.result())
            del bench
        return results
    benches = [ConfigBench(path, args, device) for path in paths]
    for _ in range(args.rounds):
        for bench in benches:
            bench.measure()
    return [bench.result() for bench in benches]


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
            # rounds interleave, so round i of both ran under the same load:
            # the median of the per-round ratios is the robust figure
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
    import torch
    from mmengine.logging import MMLogger
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

    rounds = (f' x {args.rounds} interleaved rounds (median round shown)'
              if args.rounds > 1 else '')
    print(f'\nTraining throughput on {device} ({device_description(device)})'
          f', torch {torch.__version__}; {args.warmup} warm-up + '
          f'{args.iters} timed steps per config{rounds}'
          + (f'; load average {load_before[0]:.2f} -> {load_after[0]:.2f}'
             if load_before else ''))
    print(format_table(results))
    note = {'gpu_allocated': 'peak MiB: peak allocated GPU memory',
            'host_rss_window': 'peak MiB: peak RSS of this process during '
                               'the timed steps',
            'host_rss_process': 'peak MiB: peak RSS of this process so far '
                                '(could not be reset per config)'}
    print(note[results[0]['mem_kind']]
          + (', with every model of the run resident' if args.rounds > 1
             else '') + '.')
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
