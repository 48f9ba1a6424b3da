"""tools/analysis_tools/benchmark.py: a real Runner per run, CLI, table,
JSON, pairing, real data."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark.py')
IRNET = osp.join(ROOT, 'configs', 'irnet', 'irnet_resnet20_1xb128_cifar10.py')
SKD = osp.join(ROOT, 'configs', 'skd_bnn',
               'skd-bnn_resnet20_1xb128_cifar10.py')
FP = osp.join(ROOT, 'configs', 'fp', 'fp_resnet20_1xb128_cifar10.py')

sys.path.insert(0, ROOT)
from tools.analysis_tools import benchmark  # noqa: E402


def _check_record(record, batch, iters):
    for r in record:
        assert r['batch_size'] == batch and r['iters'] == iters
        assert len(r['step_ms']) == iters
        # throughput and step time describe the same timed window
        assert r['images_per_s'] == pytest.approx(
            1e3 * batch / r['ms_per_step'], rel=1e-9)
        # the run's step time is the mean of IterTimerHook's timed steps
        assert r['ms_per_step'] == pytest.approx(
            sum(r['step_ms']) / iters, rel=1e-9)
        assert r['peak_mem_mib'] > 10
        assert all(v == v for v in r['last_losses'].values())  # no NaN


def test_cli_two_configs_synthetic_table_and_json(tmp_path):
    out = tmp_path / 'bench.json'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, TOOL, IRNET, SKD, '--device', 'cpu', '--synthetic',
         '--batch-size', '4', '--iters', '2', '--warmup', '1',
         '--json', str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    table = [line for line in lines if line.startswith('| ')]
    assert len(table) == 3 and 'img/s' in table[0]
    assert 'irnet_resnet20_1xb128_cifar10' in table[1]
    assert 'skd-bnn_resnet20_1xb128_cifar10' in table[2]
    assert any('(same backbone): step time x' in line for line in lines)

    record = json.loads(out.read_text())
    irnet, skd = record['results']
    assert (irnet['kind'], skd['kind']) == ('binary', 'skd-bnn')
    assert irnet['data'] == skd['data'] == 'synthetic'
    assert irnet['mem_kind'] == 'host_rss_window'
    _check_record(record['results'], 4, 2)
    # the SKD step logs its loss parts, IR-Net only the cross-entropy
    assert set(skd['last_losses']) == {'loss', 'loss_cls', 'loss_feat',
                                       'loss_label', 'loss_cluster'}
    assert set(irnet['last_losses']) == {'loss'}
    ratio, = record['ratios']
    assert (ratio['skd'], ratio['base']) == (skd['name'], irnet['name'])
    assert ratio['step_time_ratio'] == pytest.approx(
        skd['ms_per_step'] / irnet['ms_per_step'])
    assert f"x{ratio['step_time_ratio']:.2f}" in proc.stdout
    assert record['meta']['device'] == 'cpu'


def test_real_loader_rounds_and_bf16(cifar10_subset, tmp_path, capsys):
    import torch
    root = cifar10_subset(20, 10)
    threads = torch.get_num_threads()
    try:
        results, ratios = benchmark.main([
            FP, SKD, '--device', 'cpu', '--batch-size', '4', '--iters', '2',
            '--warmup', '1', '--num-workers', '0', '--rounds', '2',
            '--amp', 'bf16', '--threads', '1', '--data-root', root,
            '--cfg-options', 'train_dataloader.dataset.verify_md5=False'])
    finally:
        torch.set_num_threads(threads)
    fp, skd = results
    assert fp['kind'] == 'fp' and skd['kind'] == 'skd-bnn'
    assert fp['data'] == 'loader' and fp['amp'] == skd['amp'] == 'bf16'
    assert fp['rounds'] == 2 and len(fp['round_ms_per_step']) == 2
    assert sorted(fp['round_ms_per_step'])[0] == pytest.approx(
        fp['ms_per_step'])  # the median of two windows is the faster one
    assert 0 < fp['data_ms_per_step'] < fp['ms_per_step']
    _check_record(results, 4, 2)
    # different backbones (full precision vs binary): no ratio
    assert ratios == []
    assert 'x 2 rounds' in capsys.readouterr().out


def _result(name, kind, ms, **kw):
    base = dict(name=name, kind=kind, backbone='b', device='cpu',
                batch_size=8, amp='none', channels_last=False, compile=False,
                data='synthetic', ms_per_step=ms,
                images_per_s=8e3 / ms, round_ms_per_step=[ms])
    base.update(kw)
    return base


def test_pairing_needs_same_backbone_and_settings():
    results = [_result('skd', 'skd-bnn', 30.0,
                       round_ms_per_step=[30.0, 45.0, 28.0]),
               _result('irnet', 'binary', 20.0,
                       round_ms_per_step=[20.0, 20.0, 40.0]),
               _result('fp', 'fp', 10.0, backbone='fp-b'),
               _result('irnet-bs16', 'binary', 25.0, batch_size=16),
               _result('irnet-amp', 'binary', 15.0, amp='bf16')]
    ratios = benchmark.pair_ratios(results)
    assert [(r['skd'], r['base']) for r in ratios] == [('skd', 'irnet')]
    # median of the paired per-round ratios 1.5, 2.25, 0.7
    assert ratios[0]['round_step_time_ratios'] == pytest.approx(
        [1.5, 2.25, 0.7])
    assert ratios[0]['step_time_ratio'] == pytest.approx(1.5)
    assert ratios[0]['throughput_ratio'] == pytest.approx(1 / 1.5)
    table = benchmark.format_table(
        [dict(r, ms_per_step_median=r['ms_per_step'], data_ms_per_step=0.0,
              peak_mem_mib=1.0) for r in results[:2]]).splitlines()
    assert len(table) == 4 and len({len(line) for line in table}) == 1
    assert table[2].split('|')[7].strip() == '266.7'  # img/s of 'skd'


def test_bad_arguments_are_explained():
    with pytest.raises(SystemExit):
        benchmark.parse_args([IRNET, '--iters', '0'])
    with pytest.raises(SystemExit, match='give --batch-size'):
        benchmark.main([IRNET, '--device', 'cpu', '--synthetic', '--iters',
                        '1', '--cfg-options', 'train_dataloader=None'])
    with pytest.raises(SystemExit, match='does not exist'):
        benchmark.main(['configs/irnet/no_such_config.py', '--synthetic'])


def test_config_switches_are_honoured():
    from mmengine.config import Config
    cfg = Config.fromfile(IRNET)
    args = benchmark.parse_args([IRNET])
    assert benchmark.config_options(cfg, args) == dict(
        channels_last=False, compile_cfg=None, amp='none')
    cfg.custom_hooks.append(dict(type='FastPathHook', channels_last=True))
    cfg.compile = True
    cfg.optim_wrapper.type = 'AutocastOptimWrapper'
    assert benchmark.config_options(cfg, args) == dict(
        channels_last=True, compile_cfg={}, amp='bf16')
    # the config's wrapper is used as it is unless --amp is given
    assert benchmark.optim_wrapper_cfg(cfg, None, 'cpu')['type'] == \
        'AutocastOptimWrapper'
    assert benchmark.optim_wrapper_cfg(cfg, 'none', 'cpu')['type'] == \
        'OptimWrapper'
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    assert benchmark.config_options(cfg, args)['amp'] == 'fp16'
    cfg.optim_wrapper.dtype = 'bfloat16'
    assert benchmark.config_options(cfg, args)['amp'] == 'bf16'


def test_runner_config_is_a_plain_iteration_run():
    """warmup + iters iterations of IterBasedTrainLoop, nothing else: no
    validation, test, checkpoint or schedule; the config's own hooks and
    model; the synthetic dataset with the pipeline minus loading."""
    from mmengine.config import Config
    cfg = Config.fromfile(SKD)
    cfg.train_dataloader.dataset.pipeline.insert(
        0, dict(type='LoadImageFromFile'))
    args = benchmark.parse_args([SKD, '--synthetic', '--iters', '4',
                                 '--warmup', '2', '--channels-last'])
    run, info = benchmark.runner_cfg(cfg, args, 'cpu', '/tmp/x', 'skd')
    assert run.train_cfg == dict(type='IterBasedTrainLoop', max_iters=6,
                                 val_interval=10**9)
    assert run.param_scheduler is None and run.load_from is None
    assert all(run[f'{k}_{p}'] is None for k in ('val', 'test')
               for p in ('dataloader', 'cfg', 'evaluator'))
    assert run.default_hooks.checkpoint is None
    assert run.default_hooks.timer == cfg.default_hooks.timer  # kept
    types = [h['type'] for h in run.custom_hooks]
    assert types == [h['type'] for h in cfg.custom_hooks] + ['FastPathHook']
    assert run.model == cfg.model
    loader = run.train_dataloader
    assert loader.batch_size == cfg.train_dataloader.batch_size
    assert loader.sampler.type == 'InfiniteSampler'
    dataset = loader.dataset
    assert dataset.type == 'SyntheticClsDataset'
    assert dataset.img_shape == (3, 32, 32) and dataset.num_classes == 10
    assert [t['type'] for t in dataset.pipeline] == [
        t['type'] for t in cfg.train_dataloader.dataset.pipeline[1:]]
    assert loader.collate_fn == cfg.train_dataloader.collate_fn
    assert info['channels_last'] and info['data'] == 'synthetic'
    assert cfg.train_cfg.type != 'IterBasedTrainLoop'  # input unchanged


def test_timings_are_iter_timer_hook_values(monkeypatch):
    """The reported steps are the last --iters values IterTimerHook wrote
    (train/time, train/data_time), not a clock of the tool's own."""
    from mmengine.hooks import IterTimerHook
    written = []
    original = IterTimerHook._after_iter

    def spy(self, runner, *args, **kwargs):
        original(self, runner, *args, **kwargs)
        written.append(runner.message_hub.get_scalar('train/time').current())

    monkeypatch.setattr(IterTimerHook, '_after_iter', spy)
    args = benchmark.parse_args([IRNET, '--synthetic', '--batch-size', '2',
                                 '--iters', '2', '--warmup', '1'])
    result = benchmark.run_once(IRNET, args, 'cpu')
    assert len(written) == 3
    assert result['step_ms'] == pytest.approx([1e3 * t for t in written[1:]])
    assert result['kind'] == 'binary' and result['last_losses']['loss'] > 0
