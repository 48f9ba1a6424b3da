"""Soft-label bank across two processes (gloo on CPU, DDP with
broadcast_buffers=True, the case where buffers are overwritten by rank 0's).

Each rank trains a tiny SKD model on its own data for a few steps; at the
epoch end both ranks must hold the same bank, equal to the mean over the
correct samples of BOTH ranks. A mid-epoch checkpoint written through
SoftLabelBankHook and loaded on both ranks must count every sample once.
"""
import logging
import os
import os.path as osp
from types import SimpleNamespace

import torch
import torch.multiprocessing as mp
import torch.nn as nn

WORLD = 2
STEPS = 3


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        from skd_bnn_mm.models.layers import IRConv2d
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(4), nn.Hardtanh())
        self.conv1 = IRConv2d(4, 8, 3, 2, 1, bias=False)
        self.bn1, self.act1 = nn.BatchNorm2d(8), nn.Hardtanh()

    def forward(self, x):
        return (self.act1(self.bn1(self.conv1(self.stem(x)))), )


def _worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                      RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    torch.distributed.init_process_group('gloo', rank=rank, world_size=WORLD)
    from mmengine.model import MMDistributedDataParallel
    from mmengine.optim import OptimWrapper
    from mmengine.registry import DefaultScope
    from mmpretrain.structures import DataSample

    from skd_bnn_mm.engine.hooks import SoftLabelBankHook
    from skd_bnn_mm.models.classifiers import SKDImageClassifier
    from skd_bnn_mm.models.distill import SoftLabelBank

    with DefaultScope.overwrite_default_scope('mmpretrain'):
        torch.manual_seed(0)
        model = SKDImageClassifier(
            backbone=_Backbone(),
            neck=dict(type='PoolBNNeck', in_channels=8),
            head=dict(type='LinearClsHead', num_classes=3, in_channels=8),
            distill=dict(units=['act1']))
        # a second bank NOT listed in _ddp_params_and_buffers_to_ignore:
        # shows what broadcast_buffers does to unprotected running sums
        model.control_bank = SoftLabelBank(3)
        ddp = MMDistributedDataParallel(module=model, device_ids=None,
                                        broadcast_buffers=True)
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.05))
        bank = model.soft_label_bank
        ref_sums, ref_counts = torch.zeros(3, 3), torch.zeros(3,
                                                              dtype=torch.long)
        accumulate = bank.accumulate

        def spy(logits, labels):  # what this rank alone contributes
            correct = logits.argmax(1) == labels
            ref_sums.index_add_(0, labels[correct], logits[correct])
            ref_counts.index_add_(0, labels[correct],
                                  torch.ones_like(labels[correct]))
            model.control_bank.accumulate(logits, labels)
            accumulate(logits, labels)

        bank.accumulate = spy
        gen = torch.Generator().manual_seed(100 + rank)
        for _ in range(STEPS):
            labels = torch.randint(0, 3, (16, ), generator=gen)
            inputs = torch.randn(16, 3, 8, 8, generator=gen) \
                + labels.view(-1, 1, 1, 1).float()
            samples = [DataSample().set_gt_label(int(y)) for y in labels]
            ddp.train_step(dict(inputs=inputs, data_samples=samples), optim)
        local_sums, local_control = bank.sums.clone(), \
            model.control_bank.sums.clone()

        runner = SimpleNamespace(model=ddp, epoch=0, iter=STEPS,
                                 logger=logging.getLogger('bank_dist'))
        hook = SoftLabelBankHook()
        hook.after_train_iter(runner, STEPS - 1, None, None)  # mid-epoch
        checkpoint = dict(state_dict=model.state_dict())
        hook.before_save_checkpoint(runner, checkpoint)
        # a resume on both ranks: the hook's before_train, then its fold
        resumed_model = nn.Module()
        resumed_model.soft_label_bank = resumed = SoftLabelBank(3)
        prefix = 'soft_label_bank.'
        resumed.load_state_dict({k[len(prefix):]: v for k, v in
                                 checkpoint['state_dict'].items()
                                 if k.startswith(prefix)})
        resumed_runner = SimpleNamespace(model=resumed_model, epoch=0,
                                         logger=runner.logger)
        resumed_hook = SoftLabelBankHook()
        resumed_hook.before_train(resumed_runner)
        resumed_counts = resumed.counts.clone()
        resumed_hook.after_train_epoch(resumed_runner)

        hook.after_train_epoch(runner)
        torch.save(dict(bank=bank.bank, ref_sums=ref_sums,
                        ref_counts=ref_counts, local_sums=local_sums,
                        local_control=local_control,
                        counts_in_ckpt=checkpoint['state_dict'][
                            prefix + 'counts'],
                        resumed_counts=resumed_counts,
                        resumed_bank=resumed.bank,
                        num_updates=bank.num_updates),
                   osp.join(out_dir, f'rank{rank}.pt'))
    torch.distributed.destroy_process_group()
    # leave without interpreter finalisation, where gloo's threads can
    # still abort a finished process (as tools/common.py: run_tool)
    os._exit(0)


def test_bank_identical_and_all_reduced_over_two_processes(tmp_path,
                                                           free_port):
    mp.spawn(_worker, args=(free_port, str(tmp_path)), nprocs=WORLD,
             join=True)
    r = [torch.load(tmp_path / f'rank{i}.pt', weights_only=True)
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
    assert torch.equal(r[0]['counts_in_ckpt'], counts)
    assert torch.equal(r[0]['resumed_counts'], counts)
    assert int(r[1]['resumed_counts'].sum()) == 0
    torch.testing.assert_close(r[0]['resumed_bank'], expected)
    assert torch.equal(r[0]['resumed_bank'], r[1]['resumed_bank'])
