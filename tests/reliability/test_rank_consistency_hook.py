"""RankConsistencyHook on two gloo processes: BN statistics are averaged,
per-process buffers are ignored, and a diverged parameter stops training
with its name (on every process, so none is left waiting)."""
import logging
import os
from types import SimpleNamespace

import torch
import torch.multiprocessing as mp
import torch.nn as nn

WORLD = 2


class _Net(nn.Module):
    _ddp_params_and_buffers_to_ignore = ['scratch']

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 3, 1)
        self.bn = nn.BatchNorm2d(3)
        self.register_buffer('scratch', torch.zeros(2))


def _worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                      RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    torch.distributed.init_process_group('gloo', rank=rank, world_size=WORLD)
    from skd_bnn_mm.engine.hooks import RankConsistencyHook

    net = _Net()
    net.bn.running_mean.fill_(float(rank))  # 0 and 1
    net.bn.running_var.fill_(1.0 + 2 * rank)  # 1 and 3
    net.scratch.fill_(float(rank))  # per process by declaration
    infos = []
    logger = logging.getLogger(f'rank{rank}')
    logger.info = infos.append
    runner = SimpleNamespace(model=net, epoch=0, max_epochs=2,
                             logger=logger)
    hook = RankConsistencyHook()
    hook.after_train_epoch(runner)
    result = dict(mean=net.bn.running_mean.clone(),
                  var=net.bn.running_var.clone(), infos=list(infos))

    with torch.no_grad():
        net.conv.bias[1] += 1e-6 * rank  # diverge on rank 1 only
    runner.epoch = 1
    try:
        hook.after_train_epoch(runner)
        result['error'] = None
    except RuntimeError as e:
        result['error'] = str(e)
    torch.save(result, os.path.join(out_dir, f'rank{rank}.pt'))
    torch.distributed.destroy_process_group()
    # leave without interpreter finalisation, where gloo's threads can
    # still abort a finished process (as tools/common.py: run_tool)
    os._exit(0)


def test_sync_and_divergence_check(tmp_path, free_port):
    mp.spawn(_worker, args=(free_port, str(tmp_path)), nprocs=WORLD,
             join=True)
    results = [torch.load(tmp_path / f'rank{r}.pt', weights_only=True)
               for r in range(WORLD)]
    for r in results:
        assert torch.equal(r['mean'], torch.full((3, ), 0.5))
        assert torch.equal(r['var'], torch.full((3, ), 2.0))
        assert any('identical on 2 processes' in i for i in r['infos'])
        assert r['error'] is not None
        assert 'conv.bias' in r['error'] and 'After epoch 2' in r['error']
        assert 'conv.weight' not in r['error'] and 'scratch' not in \
            r['error']
        assert 'before this epoch\'s checkpoint' in r['error']
