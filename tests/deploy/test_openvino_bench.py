"""bench_inference.py: one table of every backend, ratios to openvino-float,
file sizes, peak memory of a separate process, the chart and the JSON."""
import json
import os.path as osp
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from tools.analysis_tools import bench_inference  # noqa: E402

pytest.importorskip('openvino')
pytest.importorskip('onnxruntime')
TINY = osp.join(ROOT, 'tests', 'deploy', 'tiny_skd_bnn_cifar10.py')


def test_bench_inference_tiny(tmp_path):
    out = tmp_path / 'bench.json'
    result = bench_inference.main([
        TINY, '--backends', 'torch,openvino-float,openvino-binary',
        '--batch', '1', '3', '--threads', '1', '--rounds', '2',
        '--min-time', '0.01', '--work-dir', str(tmp_path), '--json',
        str(out), '--perf-count', '--no-memory'])
    rows = result['results']
    assert [(r['backend'], r['batch']) for r in rows] == [
        ('torch', 1), ('openvino-float', 1), ('openvino-binary', 1),
        ('torch', 3), ('openvino-float', 3), ('openvino-binary', 3)]
    for r in rows:
        assert len(r['rounds_ms']) == 2
        assert r['latency_ms'] == pytest.approx(
            sorted(r['rounds_ms'])[0] / 2 + sorted(r['rounds_ms'])[1] / 2)
        assert r['images_per_s'] == pytest.approx(
            r['batch'] / r['latency_ms'] * 1e3)
        base = next(b for b in rows if b['backend'] == 'openvino-float'
                    and b['batch'] == r['batch'])
        assert r['speedup_vs_openvino-float'] == pytest.approx(
            base['latency_ms'] / r['latency_ms'])
        assert 'peak_memory_mib' not in r
    sizes = {r['backend']: r['file_bytes'] for r in rows}
    # .xml + .bin; 1-bit weights make the binary IR the smaller one
    assert sizes['openvino-binary'] < sizes['openvino-float']
    assert sizes['openvino-float'] == (
        osp.getsize(tmp_path / 'model_float.xml')
        + osp.getsize(tmp_path / 'model_float.bin'))
    assert osp.getsize(tmp_path / 'bench_inference.png') > 1000
    saved = json.loads(out.read_text())
    assert saved['baseline'] == 'openvino-float'
    assert saved['results'][2]['backend'] == 'openvino-binary'
    assert saved['versions']['openvino']


def test_bench_inference_peak_memory(tmp_path):
    # a child process per backend and batch size
    result = bench_inference.main([
        TINY, '--backends', 'openvino-binary', '--batch', '2', '--threads',
        '1', '--rounds', '1', '--min-time', '0.01', '--work-dir',
        str(tmp_path)])
    (row, ) = result['results']
    assert 0 < row['peak_memory_mib'] < 4096


def test_bench_inference_rejects_unknown_backend():
    with pytest.raises(SystemExit):
        bench_inference.main([TINY, '--backends', 'tensorrt'])
