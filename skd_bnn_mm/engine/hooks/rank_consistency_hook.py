"""Keep every process's model identical, and check that it is."""
from typing import Dict, List, Set

import torch
from mmengine import dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS
from torch.nn.modules.batchnorm import _BatchNorm


def local_state_names(model: torch.nn.Module) -> Set[str]:
    """State entries that legitimately differ between processes: those the
    model lists in ``_ddp_params_and_buffers_to_ignore`` (DDP leaves them
    alone)."""
    return set(getattr(model, '_ddp_params_and_buffers_to_ignore', ()) or ())


def state_fingerprints(model: torch.nn.Module, skip: Set[str]
                       ) -> Dict[str, torch.Tensor]:
    """Per state entry, ``(sum, sum of squares, sum of i * x)`` in float64.

    Equal entries give bitwise-equal fingerprints on every process; the
    position-weighted sum catches permuted values.
    """
    out = {}
    for name, value in model.state_dict(keep_vars=False).items():
        if name in skip or not torch.is_tensor(value):
            continue
        flat = value.detach().reshape(-1).double()
        pos = torch.arange(flat.numel(), dtype=torch.float64,
                           device=flat.device)
        out[name] = torch.stack(
            [flat.sum(), flat.square().sum(), (flat * pos).sum()])
    return out


@HOOKS.register_module()
class RankConsistencyHook(Hook):
    """At the end of every training epoch, make and check the processes agree.

    With several processes, DDP keeps the parameters equal, but BatchNorm's
    running statistics come from each process's own batches (mmengine wraps
    with ``broadcast_buffers=False``): validation would then mix models and
    the checkpoint would hold the main process's statistics only. This hook,
    after the epoch's other updates (the soft-label bank is folded in at
    ``NORMAL`` priority) and before validation and the checkpoint:

    - ``sync_norm_stats``: averages the running mean/variance of every
      BatchNorm layer over the processes (one collective);
    - ``check``: gathers a float64 fingerprint of every parameter and buffer
      (except the per-process ones, see :func:`local_state_names`) and stops
      training, before the checkpoint is written, if the processes differ,
      naming the entries.

    Outside distributed runs it does nothing. It is in every config
    (``default_hooks.rank_consistency``), so validation and the saved
    checkpoint see the same statistics; a second instance (a config that
    also lists it in ``custom_hooks``) does nothing.

    Args:
        sync_norm_stats (bool): average BatchNorm running statistics.
        check (bool): compare the model state of all processes.
        interval (int): every ``interval`` epochs (and after the last).
    """

    priority = 'LOW'  # after NORMAL hooks, before CheckpointHook (VERY_LOW)

    def __init__(self, sync_norm_stats: bool = True, check: bool = True,
                 interval: int = 1) -> None:
        if not (isinstance(interval, int) and interval >= 1):
            raise ValueError(f'RankConsistencyHook: interval must be an int '
                             f'>= 1 (epochs), got {interval!r}')
        self.sync_norm_stats = sync_norm_stats
        self.check = check
        self.interval = interval
        self._active = True

    def before_run(self, runner) -> None:
        first = next(h for h in runner.hooks
                     if isinstance(h, RankConsistencyHook))
        self._active = first is self

    @staticmethod
    def _model(runner) -> torch.nn.Module:
        return runner.model.module if is_model_wrapper(runner.model) \
            else runner.model

    def after_train_epoch(self, runner) -> None:
        if not self._active or dist.get_world_size() == 1:
            return
        if not (self.every_n_epochs(runner, self.interval)
                or self.is_last_train_epoch(runner)):
            return
        model = self._model(runner)
        if self.sync_norm_stats:
            self._average_norm_stats(model)
        if self.check:
            self._check(runner, model)

    @staticmethod
    def _average_norm_stats(model: torch.nn.Module) -> None:
        stats: List[torch.Tensor] = []
        for module in model.modules():
            if isinstance(module, _BatchNorm) and module.track_running_stats \
                    and module.running_mean is not None:
                stats += [module.running_mean, module.running_var]
        if not stats:
            return
        flat = torch.cat([s.reshape(-1).float() for s in stats])
        dist.all_reduce(flat, op='mean')
        offset = 0
        for s in stats:
            n = s.numel()
            s.copy_(flat[offset:offset + n].view_as(s))
            offset += n

    def _check(self, runner, model: torch.nn.Module) -> None:
        prints = state_fingerprints(model, local_state_names(model))
        if not prints:
            return
        names = list(prints)
        mine = torch.stack([prints[n] for n in names])
        gathered = dist.all_gather(mine)
        differ = [n for i, n in enumerate(names)
                  if any(not torch.equal(g[i], gathered[0][i])
                         for g in gathered[1:])]
        if differ:
            shown = ', '.join(differ[:8]) + (
                f' and {len(differ) - 8} more' if len(differ) > 8 else '')
            raise RuntimeError(
                f'After epoch {runner.epoch + 1} the {len(gathered)} '
                f'processes hold different model state: {shown}. Training '
                'stopped before this epoch\'s checkpoint was written. Look '
                'for code that changes parameters or buffers differently per '
                'process '
                '(per-rank seeds, rank-dependent branches, buffers updated '
                'outside forward); list state that is meant to differ in '
                'the model\'s `_ddp_params_and_buffers_to_ignore`. Resume '
                'from the last checkpoint once fixed.')
        runner.logger.info(
            f'RankConsistencyHook: {len(names)} state entries identical on '
            f'{len(gathered)} processes after epoch {runner.epoch + 1}.')
