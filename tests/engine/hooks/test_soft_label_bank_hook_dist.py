"""SoftLabelBankHook across two processes: one SafeRunner per process (gloo
on CPU, DDP with broadcast_buffers=True, the case where buffers are
overwritten by rank 0's).

Each rank trains the tiny SKD-BNN on its half of the data for one epoch of
3 iterations; at the epoch end both ranks must hold the same bank, equal to
the mean over the correct samples of BOTH ranks. The iteration checkpoint
written before that fold (SafeRunner calls ``before_save_checkpoint`` on
every process) holds the sums over both ranks; a resume from it on both
ranks must count every sample once.
"""
import os
import os.path as osp

import torch
import torch.multiprocessing as mp
from hook_runner_case import HookRunnerCase, worker_env
from mmengine.hooks import Hook

from skd_bnn_mm.models.classifiers import SKDImageClassifier
from skd_bnn_mm.models.distill import SoftLabelBank

WORLD = 2
STEPS = 3
BATCH = 16


class ControlBankSKD(SKDImageClassifier):
    """With a second bank NOT listed in ``_ddp_params_and_buffers_to_ignore``:
    shows what broadcast_buffers does to unprotected running sums."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.control_bank = SoftLabelBank(self.num_classes)


class BankProbe(Hook):
    """Before SoftLabelBankHook (``NORMAL``): the counts an epoch starts
    with and each bank's own sums before the epoch's fold."""

    priority = 'ABOVE_NORMAL'

    def before_train_epoch(self, runner):
        self.start_counts = runner.model.module.soft_label_bank.counts.clone()

    def after_train_epoch(self, runner):
        model = runner.model.module
        self.local_sums = model.soft_label_bank.sums.clone()
        self.local_control = model.control_bank.sums.clone()


def _worker(rank, port, out_dir, cfg_dict):
    worker_env(rank, WORLD, port)
    from hook_runner_case import ToyImageDataset, get_hook, start_gloo
    from mmengine.config import Config
    from mmengine.registry import DATASETS
    from mmpretrain.registry import HOOKS, MODELS

    from skd_bnn_mm.engine.runner import SafeRunner
    DATASETS.register_module(module=ToyImageDataset, force=True)
    MODELS.register_module(module=ControlBankSKD, force=True)
    HOOKS.register_module(module=BankProbe, force=True)

    cfg = Config(cfg_dict)
    start_gloo(cfg)
    runner = SafeRunner.from_cfg(cfg)
    model = runner.model.module
    bank = model.soft_label_bank
    ref_sums = torch.zeros(3, 3)
    ref_counts = torch.zeros(3, dtype=torch.long)
    accumulate = bank.accumulate

    def spy(logits, labels):  # what this rank alone contributes
        correct = logits.argmax(1) == labels
        ref_sums.index_add_(0, labels[correct], logits[correct])
        ref_counts.index_add_(0, labels[correct],
                              torch.ones_like(labels[correct]))
        model.control_bank.accumulate(logits, labels)
        accumulate(logits, labels)

    bank.accumulate = spy
    runner.train()
    assert runner.iter == STEPS
    probe = get_hook(runner, BankProbe)

    # a resume on both ranks from the checkpoint taken before the fold
    cfg.experiment_name += '_resumed'
    cfg.load_from = osp.join(cfg.work_dir, f'iter_{STEPS}.pth')
    cfg.resume = True
    resumed = SafeRunner.from_cfg(cfg)
    resumed.train()
    resumed_probe = get_hook(resumed, BankProbe)
    torch.save(dict(bank=bank.bank, ref_sums=ref_sums,
                    ref_counts=ref_counts, local_sums=probe.local_sums,
                    local_control=probe.local_control,
                    num_updates=bank.num_updates,
                    resumed_counts=resumed_probe.start_counts,
                    resumed_bank=resumed.model.module.soft_label_bank.bank),
               osp.join(out_dir, f'rank{rank}.pt'))
    torch.distributed.destroy_process_group()
    # leave without interpreter finalisation, where gloo's threads can
    # still abort a finished process (as tools/common.py: run_tool)
    os._exit(0)


class TestSoftLabelBankHookDist(HookRunnerCase):

    def test_bank_identical_and_all_reduced_over_two_processes(self):
        cfg = self.tiny_skd_cfg(self.epoch_based_cfg, num_classes=3,
                                num_samples=WORLD * STEPS * BATCH,
                                batch_size=BATCH)
        cfg.model.type = 'ControlBankSKD'
        cfg.train_cfg.max_epochs = 1
        cfg.launcher = 'pytorch'
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel',
                                     broadcast_buffers=True)
        # the iteration checkpoint after the last step, before the fold
        cfg.default_hooks.checkpoint = dict(
            type='CheckpointHook', by_epoch=False, interval=STEPS)
        cfg.custom_hooks = [dict(type='SoftLabelBankHook'),
                            dict(type='BankProbe')]
        cfg.experiment_name = self.experiment_name
        self.setup_dist_env()  # a free port; the workers set their ranks
        port = int(os.environ['MASTER_PORT'])
        out = self.temp_dir.name
        mp.spawn(_worker, args=(port, out, cfg.to_dict()), nprocs=WORLD,
                 join=True)
        r = [torch.load(osp.join(out, f'rank{i}.pt'), weights_only=True)
             for i in range(WORLD)]
        # the ranks saw different correct samples ...
        assert all(int(x['ref_counts'].sum()) > 0 for x in r)
        assert not torch.equal(r[0]['ref_sums'], r[1]['ref_sums'])
        # ... and kept their own running sums despite broadcast_buffers=True,
        for x in r:
            torch.testing.assert_close(x['local_sums'], x['ref_sums'])
        # which the unprotected control bank did not (rank 1 got rank 0's)
        assert not torch.allclose(r[1]['local_control'], r[1]['ref_sums'])
        # identical banks, equal to the mean over both ranks' correct samples
        assert torch.equal(r[0]['bank'], r[1]['bank'])
        sums = r[0]['ref_sums'] + r[1]['ref_sums']
        counts = r[0]['ref_counts'] + r[1]['ref_counts']
        expected = torch.where(counts[:, None] > 0,
                               sums / counts.clamp_min(1)[:, None],
                               torch.zeros(3, 3))
        torch.testing.assert_close(r[0]['bank'], expected)
        assert all(int(x['num_updates']) == 1 for x in r)
        # mid-epoch checkpoint: totals in the file, counted once after loading
        state = torch.load(osp.join(out, f'iter_{STEPS}.pth'),
                           weights_only=False)['state_dict']
        assert torch.equal(state['soft_label_bank.counts'], counts)
        assert int(state['soft_label_bank.num_updates']) == 0
        assert torch.equal(r[0]['resumed_counts'], counts)
        assert int(r[1]['resumed_counts'].sum()) == 0
        torch.testing.assert_close(r[0]['resumed_bank'], expected)
        assert torch.equal(r[0]['resumed_bank'], r[1]['resumed_bank'])
