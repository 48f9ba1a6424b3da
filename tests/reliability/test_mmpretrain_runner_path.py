"""Our configs built the way mmpretrain 1.2.0's own ``tools/train.py`` and
``tools/test.py`` (and so ``mim train/test``) build them.

Those tools import only mmengine: ``Config.fromfile`` (which imports the
config's ``custom_imports``), then ``Runner.from_cfg(cfg)`` when the config
has no ``runner_type``, else ``mmengine.registry.RUNNERS.build(cfg)``, the
root registry. The calls below are theirs, in their order; the safety of our
own tools must hold on that path: the safe runner, atomic checkpoints that
are removed only after their successor is written, the mid-epoch loop, the
loss check, and a resume that refuses another model's checkpoint.
"""
import pytest
from mmengine.config import Config
from mmengine.registry import RUNNERS, DefaultScope
from mmengine.runner import Runner
from reliability_utils import TINY, snapshot


def _mmpretrain_cfg(data_root, work_dir, **options):
    """``tools/train.py CONFIG --work-dir W --cfg-options ...`` up to the
    runner build (their merge order)."""
    import uuid
    cfg = Config.fromfile(TINY)
    cfg.merge_from_dict({
        'train_cfg.max_epochs': 1, 'param_scheduler.warmup': 0,
        **{f'{name}.dataset.data_root': str(data_root) for name in (
            'train_dataloader', 'val_dataloader', 'test_dataloader')},
        **{f'{name}.dataset.verify_md5': False for name in (
            'train_dataloader', 'val_dataloader', 'test_dataloader')},
        **options})
    cfg.work_dir = str(work_dir)
    cfg.launcher = 'none'
    cfg.experiment_name = f'mmpretrain_tools_{uuid.uuid4().hex[:12]}'
    cfg.log_level = 'WARNING'
    return cfg


def _build(cfg):
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)


@pytest.fixture(scope='module')
def trained(data_root, tmp_path_factory):
    """One tiny epoch through mmpretrain's train.py calls."""
    from skd_bnn_mm.engine.hooks import FiniteLossHook, SafeCheckpointHook
    from skd_bnn_mm.engine.runner import SafeEpochBasedTrainLoop, SafeRunner
    import torch
    work = tmp_path_factory.mktemp('mmpretrain_train')
    cfg = _mmpretrain_cfg(data_root, work)
    # one thread, as the other in-process runs (conftest): several OpenMP
    # threads on a busy small machine slow this tiny model down ~10x
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # not our plugin's scope: the root registry must still find the runner
    DefaultScope.get_instance(f'other_{work.name}', scope_name='mmengine')
    runner = _build(cfg)
    assert type(runner) is SafeRunner
    try:
        runner.train()
    finally:
        torch.set_num_threads(threads)
    assert isinstance(runner.train_loop, SafeEpochBasedTrainLoop)
    kinds = {type(h) for h in runner.hooks}
    assert {SafeCheckpointHook, FiniteLossHook} <= kinds
    val = runner.message_hub.get_scalar('val/accuracy/top1').current()
    return work, val


def test_mmpretrain_train_then_test(trained, data_root, tmp_path):
    work, val = trained
    assert (work / 'epoch_1.pth').is_file()
    # tools/test.py CONFIG CHECKPOINT: load_from, then runner.test()
    cfg = _mmpretrain_cfg(data_root, tmp_path / 'test',
                          load_from=str(work / 'epoch_1.pth'))
    metrics = _build(cfg).test()
    assert metrics['accuracy/top1'] == pytest.approx(val, abs=1e-9)


def test_mmpretrain_resume_refuses_another_model(trained, data_root):
    work, _ = trained
    before = snapshot(work)
    # tools/train.py --resume CKPT: resume=True, load_from=CKPT
    cfg = _mmpretrain_cfg(data_root, work, resume=True,
                          load_from=str(work / 'epoch_1.pth'),
                          **{'train_cfg.max_epochs': 2,
                             'model.head.num_classes': 5})
    with pytest.raises(RuntimeError, match='saved by a different model'):
        _build(cfg).train()
    assert snapshot(work) == before


def test_mmpretrain_runner_from_cfg_keeps_loop_and_hooks(data_root,
                                                         tmp_path):
    """Without ``runner_type`` (mmengine's plain Runner) the loop and the
    hooks, named in the config, still come from the plugin."""
    from skd_bnn_mm.engine.hooks import (FiniteLossHook, RankConsistencyHook,
                                         SafeCheckpointHook)
    from skd_bnn_mm.engine.runner import SafeEpochBasedTrainLoop
    cfg = _mmpretrain_cfg(data_root, tmp_path)
    cfg.pop('runner_type')
    runner = _build(cfg)
    assert type(runner) is Runner
    runner._train_loop = runner.build_train_loop(runner._train_loop)
    assert isinstance(runner.train_loop, SafeEpochBasedTrainLoop)
    kinds = {type(h) for h in runner.hooks}
    assert {SafeCheckpointHook, FiniteLossHook, RankConsistencyHook} <= kinds


def test_plugin_default_hooks_can_be_removed(data_root, tmp_path):
    """``default_hooks.finite_loss=None`` removes it (mmengine alone would
    assert: it accepts None only for its own default hook names)."""
    from skd_bnn_mm.engine.hooks import FiniteLossHook, SetupCheckHook
    cfg = _mmpretrain_cfg(data_root, tmp_path, **{
        'default_hooks.finite_loss': None})
    kinds = {type(h) for h in _build(cfg).hooks}
    assert FiniteLossHook not in kinds
    assert SetupCheckHook in kinds  # the others stay
