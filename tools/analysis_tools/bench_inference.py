"""CPU inference speed of one network on several runtimes, side by side.

    python tools/analysis_tools/bench_inference.py CONFIG [CHECKPOINT]
        [--backends torch,onnxruntime,openvino-float,openvino-binary]
        [--batch 1 32] [--threads 1 2] [--rounds 7] [--min-time 0.3]
        [--shape C H W] [--json OUT] [--png OUT] [--work-dir DIR]
        [--no-memory] [--perf-count] [--cfg-options key=value ...]

CHECKPOINT may be a training checkpoint or a ``.bnn`` file; without one the
config's initial weights are used (speed does not depend on the values).
The network is written once per runtime into ``--work-dir`` (default: a
temporary folder):

- ``torch``: PyTorch fp32 eval of the deployed model (``to_deploy``: the
  binary convs are float convs on the +-1 map), from a ``.bnn`` file;
- ``onnxruntime``: ``export_onnx``, onnxruntime's CPU provider with its
  default graph optimizations;
- ``openvino-float``: ``export_openvino(binary=False)``, float convolutions;
- ``openvino-binary``: ``export_openvino``, ``BinaryConvolution``.

For every (threads, batch) pair, each backend is warmed up and then timed in
``--rounds`` interleaved rounds (backend A, B, C, D, A, B, ...; each round
runs a backend for at least ``--min-time`` seconds); the median round gives
the latency (ms per batch) and images/s. Interleaving makes the ratios fair
on a machine whose load changes; the absolute figures still move with it.
OpenVINO runs in fp32 (``INFERENCE_PRECISION_HINT=f32``: on CPUs with bf16
units it would otherwise switch the float layers to bf16), one stream.

Peak memory: for each backend and batch size a separate process imports the
runtimes, then loads the file and runs a few batches; the figure is its peak
resident memory above what it held after the imports (Linux: the high-water
mark is reset through /proc/self/clear_refs). ``--perf-count`` prints, per
OpenVINO backend, where one batch spends its time (OpenVINO's per-layer
counters, summed by layer type).

The table goes to stdout, a bar chart of images/s to ``--png`` (default
``bench_inference.png`` in the work dir) and, with ``--json``, every figure
with the ratio of each backend to ``openvino-float``.
"""
import argparse
import json
import os
import os.path as osp
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from tools.analysis_tools.benchmark import (_reset_rss_peak,  # noqa: E402
                                            _rss_peak_mib, device_description)
from tools.deploy.export_openvino import load_model  # noqa: E402

BACKENDS = ('torch', 'onnxruntime', 'openvino-float', 'openvino-binary')
BASELINE = 'openvino-float'
FILES = {'torch': 'model.bnn', 'onnxruntime': 'model.onnx',
         'openvino-float': 'model_float.xml',
         'openvino-binary': 'model_binary.xml'}


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='CPU inference speed on several runtimes')
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?',
                        help='training checkpoint or .bnn file (default: '
                        'the initial weights)')
    parser.add_argument('--backends', default=','.join(BACKENDS),
                        help=f'comma-separated, among {", ".join(BACKENDS)}')
    parser.add_argument('--batch', type=int, nargs='+', default=[1, 32])
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--min-time', type=float, default=0.3,
                        help='seconds per backend and round')
    parser.add_argument('--shape', type=int, nargs=3, metavar=('C', 'H', 'W'))
    parser.add_argument('--json', help='write every figure to this file')
    parser.add_argument('--png', help='bar chart (default: '
                        'WORK_DIR/bench_inference.png)')
    parser.add_argument('--work-dir', help='keep the exported files here')
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory processes')
    parser.add_argument('--perf-count', action='store_true',
                        help="print OpenVINO's per-layer-type times")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--probe', nargs=5, help=argparse.SUPPRESS,
                        metavar=('BACKEND', 'FILE', 'BATCH', 'THREADS',
                                 'SHAPE'))
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(',') if b]
    unknown = sorted(set(args.backends) - set(BACKENDS))
    if unknown:
        parser.error(f'unknown backends {unknown}; choose among '
                     f'{", ".join(BACKENDS)}')
    if min(args.batch) < 1 or min(args.threads) < 1 or args.rounds < 1:
        parser.error('--batch, --threads and --rounds must be >= 1')
    return args


# ------------------------------------------------------------ runners
def make_runner(backend, path, batch, threads, shape):
    """A function that runs one batch, on a fixed random input."""
    import numpy as np
    x = np.random.default_rng(0).standard_normal(
        (batch, *shape)).astype(np.float32)
    if backend == 'torch':
        import torch

        from skd_bnn_mm.deploy import LogitsModel, load_1bit
        model = LogitsModel(load_1bit(path)).eval()
        xt = torch.from_numpy(x)

        def run():
            torch.set_num_threads(threads)  # process-wide: set every call
            with torch.inference_mode():
                return model(xt)
        return run
    if backend == 'onnxruntime':
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(path, options,
                                    providers=['CPUExecutionProvider'])
        name = sess.get_inputs()[0].name
        return lambda: sess.run(None, {name: x})
    from skd_bnn_mm.deploy import compile_openvino
    request = compile_openvino(path, threads, batch).create_infer_request()
    return lambda: request.infer(x)


def export_all(model, model_cfg, shape, backends, work_dir):
    from skd_bnn_mm.deploy import (export_onnx, export_openvino, save_1bit,
                                   to_deploy)
    deployed = to_deploy(model)
    paths = {}
    for backend in backends:
        path = osp.join(work_dir, FILES[backend])
        if backend == 'torch':
            save_1bit(deployed, path, model_cfg)
        elif backend == 'onnxruntime':
            export_onnx(deployed, path, shape)
        else:
            # dynamic batch axis, fixed when compiled
            export_openvino(deployed, path, shape, batch=None,
                            binary=backend == 'openvino-binary')
        paths[backend] = path
    return paths


def file_bytes(path):
    size = osp.getsize(path)
    if path.endswith('.xml'):
        size += osp.getsize(path[:-4] + '.bin')
    return size


def time_configs(paths, args, shape):
    """Interleaved rounds per (threads, batch); returns the result rows."""
    rows = []
    for threads in args.threads:
        for batch in args.batch:
            runners, reps, times = {}, {}, {}
            for backend, path in paths.items():
                run = runners[backend] = make_runner(backend, path, batch,
                                                     threads, shape)
                run()  # warm-up (first-call allocations, JIT)
                t0 = time.perf_counter()
                run()
                once = time.perf_counter() - t0
                reps[backend] = max(1, int(args.min_time / max(once, 1e-6)))
                times[backend] = []
            for _ in range(args.rounds):
                for backend, run in runners.items():
                    t0 = time.perf_counter()
                    for _ in range(reps[backend]):
                        run()
                    times[backend].append(
                        (time.perf_counter() - t0) / reps[backend])
            for backend in paths:
                latency = statistics.median(times[backend])
                rows.append(dict(
                    backend=backend, threads=threads, batch=batch,
                    latency_ms=latency * 1e3,
                    images_per_s=batch / latency,
                    rounds_ms=[t * 1e3 for t in times[backend]],
                    calls_per_round=reps[backend],
                    file_bytes=file_bytes(paths[backend])))
            del runners
    base = {(r['threads'], r['batch']): r['latency_ms'] for r in rows
            if r['backend'] == BASELINE}
    for r in rows:
        ref = base.get((r['threads'], r['batch']))
        r[f'speedup_vs_{BASELINE}'] = (ref / r['latency_ms']
                                       if ref is not None else None)
    return rows


# ------------------------------------------------------------ memory
def probe(backend, path, batch, threads, shape):
    """Run in a child process: peak RSS (MiB) above the post-import RSS."""
    import numpy  # noqa: F401
    import onnxruntime  # noqa: F401
    import openvino  # noqa: F401
    import torch  # noqa: F401

    import skd_bnn_mm.deploy  # noqa: F401
    import skd_bnn_mm.models  # noqa: F401
    _reset_rss_peak()
    base = _rss_peak_mib()
    run = make_runner(backend, path, batch, threads, shape)
    for _ in range(3):
        run()
    print(json.dumps(dict(peak_mib=_rss_peak_mib() - base)))


def measure_memory(paths, args, shape):
    memory = {}
    for backend, path in paths.items():
        for batch in args.batch:
            cmd = [sys.executable, osp.abspath(__file__), args.config,
                   '--probe', backend, path, str(batch),
                   str(args.threads[0]), ','.join(map(str, shape))]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f'memory probe failed: {shlex.join(cmd)}\n'
                                 f'{proc.stderr[-2000:]}')
            line = proc.stdout.strip().splitlines()[-1]
            memory[(backend, batch)] = json.loads(line)['peak_mib']
    return memory


# ------------------------------------------------------------ output
def print_perf_counts(paths, args, shape):
    from skd_bnn_mm.deploy import compile_openvino, perf_counters
    import numpy as np
    for backend, path in paths.items():
        if not backend.startswith('openvino'):
            continue
        batch, threads = args.batch[0], args.threads[0]
        request = compile_openvino(path, threads, batch,
                                   perf_count=True).create_infer_request()
        x = np.random.default_rng(0).standard_normal(
            (batch, *shape)).astype(np.float32)
        request.infer(x)
        runs = []
        for _ in range(max(3, args.rounds)):
            request.infer(x)
            runs.append(perf_counters(request))
        # median over the runs of each layer type's time
        counts = {k: dict(ms=statistics.median(r[k]['ms'] for r in runs),
                          count=v['count']) for k, v in runs[0].items()}
        counts = dict(sorted(counts.items(), key=lambda kv: -kv[1]['ms']))
        total = sum(v['ms'] for v in counts.values())
        print(f'\n{backend}, batch {batch}, {threads} thread(s): '
              f'{total:.2f} ms in the layers (median of {len(runs)} runs)')
        for key, v in list(counts.items())[:10]:
            print(f'  {key:45s} {v["ms"]:8.3f} ms  {v["count"]:3d} layers '
                  f'({100 * v["ms"] / total:4.1f} %)')


def table(rows):
    head = ('| backend | threads | batch | latency (ms) | images/s | '
            f'x {BASELINE} | file size | peak memory |')
    lines = [head, '|' + '---|' * 8]
    for r in rows:
        ratio = r[f'speedup_vs_{BASELINE}']
        mem = r.get('peak_memory_mib')
        lines.append(
            f"| {r['backend']} | {r['threads']} | {r['batch']} | "
            f"{r['latency_ms']:.2f} | {r['images_per_s']:.1f} | "
            f"{'-' if ratio is None else f'{ratio:.2f}'} | "
            f"{r['file_bytes'] / 2**20:.2f} MB | "
            f"{'-' if mem is None else f'{mem:.0f} MB'} |")
    return '\n'.join(lines)


def plot(rows, path, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    groups = sorted({(r['threads'], r['batch']) for r in rows})
    backends = list(dict.fromkeys(r['backend'] for r in rows))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(groups), 3.2), dpi=90)
    width = 0.8 / len(backends)
    for i, backend in enumerate(backends):
        values = [next((r['images_per_s'] for r in rows
                        if r['backend'] == backend
                        and (r['threads'], r['batch']) == g), 0)
                  for g in groups]
        ax.bar(np.arange(len(groups)) + (i - (len(backends) - 1) / 2) * width,
               values, width, label=backend)
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels([f'{t} thr, batch {b}' for t, b in groups])
    ax.set_ylabel('images/s')
    ax.set_yscale('log')
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.probe:
        backend, path, batch, threads, shape = args.probe
        return probe(backend, path, int(batch), int(threads),
                     tuple(int(s) for s in shape.split(',')))
    model, shape, cfg = load_model(args.config, args.checkpoint,
                                   args.cfg_options, args.shape,
                                   tool='bench_inference')
    from skd_bnn_mm.deploy import inference_config
    work_dir = args.work_dir or tempfile.mkdtemp(prefix='bench_inference_')
    os.makedirs(work_dir, exist_ok=True)
    paths = export_all(model, inference_config(cfg), shape, args.backends,
                       work_dir)
    del model
    rows = time_configs(paths, args, shape)
    if not args.no_memory:
        memory = measure_memory(paths, args, shape)
        for r in rows:
            r['peak_memory_mib'] = memory[(r['backend'], r['batch'])]
    cpu = device_description('cpu').rsplit(', ', 1)[0]
    name = osp.splitext(osp.basename(args.config))[0]
    print(f'{name}, input {"x".join(map(str, shape))}, {cpu}; '
          f'median of {args.rounds} interleaved rounds')
    print(table(rows))
    if args.perf_count:
        print_perf_counts(paths, args, shape)
    png = args.png or osp.join(work_dir, 'bench_inference.png')
    plot(rows, png, f'{name} ({"x".join(map(str, shape))}), {cpu}')
    print(f'chart: {png}')
    result = dict(config=args.config, checkpoint=args.checkpoint,
                  input_shape=list(shape), cpu=cpu, rounds=args.rounds,
                  min_time_s=args.min_time, baseline=BASELINE,
                  versions=_versions(), command=shlex.join(
                      ['python', 'tools/analysis_tools/bench_inference.py']
                      + list(sys.argv[1:] if argv is None else argv)),
                  results=rows)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return result


def _versions():
    import importlib.metadata as md
    out = {}
    for pkg in ('torch', 'onnxruntime', 'openvino'):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


if __name__ == '__main__':
    main()
