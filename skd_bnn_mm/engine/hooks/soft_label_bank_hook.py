"""Epoch-end update of SKD-BNN's soft-label bank."""
import json
import os
import os.path as osp
from typing import List, Optional, Tuple

from mmengine import dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from skd_bnn_mm.models.distill import SoftLabelBank


@HOOKS.register_module()
class SoftLabelBankHook(Hook):
    """Fold each training epoch into the model's :class:`SoftLabelBank`.

    The bank is a plain per-process module; this hook owns everything about
    processes and unfinished epochs. Within an epoch each process sums its
    own samples (the model keeps ``sums``/``counts`` out of DDP's buffer
    broadcast, see ``SKDImageClassifier``); a checkpoint holds sums over
    all processes, which rank 0 alone carries on after loading, so a resume
    with any number of processes counts every sample once.

    - ``before_train``: processes other than rank 0 zero their
      ``sums``/``counts`` (whatever loaded them: resume, ``load_from``,
      ``init_cfg``). It also forgets a ``last_epoch`` that lies at or after
      the starting epoch: the bank then comes from another run
      (``load_from``, e.g. stage 2 loading stage 1), whose bank is kept as
      the starting soft labels, and every epoch of this run is folded in.
    - ``after_train_epoch``: :meth:`fold` on every process: sums and counts
      all-reduced, then ``bank.update(runner.epoch)``. Priority ``NORMAL``
      puts this before ``CheckpointHook`` (``VERY_LOW``), so an epoch
      checkpoint holds the bank that the next epoch uses. The bank records
      the epoch it last folded (``last_epoch``), so a second call in the
      same epoch does nothing, and after a resume the restored bank is used
      as it is.
    - ``before_save_checkpoint`` in the middle of an epoch with several
      processes: the checkpoint gets the running sums/counts summed over all
      processes (a collective: ``SafeRunner`` calls this hook point on every
      process).
    - ``save_interval=N`` (0 = off): every N epochs the main process writes
      ``{work_dir}/{out_dir}/epoch_{n}.json`` with the class names, the
      per-class counts of correct samples and the bank's logits.
    The loss check that used to live here is
    :class:`~skd_bnn_mm.engine.hooks.FiniteLossHook` (in every config).

    Args:
        save_interval (int): epochs between bank dumps; 0 disables them.
        out_dir (str): folder under the work dir for the dumps.
        check_finite (bool): accepted for older configs; the check is done
            by ``FiniteLossHook``.
    """

    priority = 'NORMAL'

    #: the bank's buffers that hold one process's part until :meth:`fold`
    partial_buffers = ('sums', 'counts')

    def __init__(self, save_interval: int = 0, out_dir: str = 'soft_label_bank',
                 check_finite: bool = True) -> None:
        if not (isinstance(save_interval, int) and save_interval >= 0):
            raise ValueError(f'save_interval must be an int >= 0 (0 = off), '
                             f'got {save_interval!r}')
        self.save_interval = save_interval
        self.out_dir = out_dir
        # the loss check is FiniteLossHook's (default_hooks); kept readable
        self.check_finite = check_finite
        self._mid_epoch = False
        self._warned = False

    @staticmethod
    def _banks(runner) -> List[Tuple[str, SoftLabelBank]]:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        return [(name, m) for name, m in model.named_modules()
                if isinstance(m, SoftLabelBank)]

    def _banks_or_warn(self, runner) -> List[Tuple[str, SoftLabelBank]]:
        banks = self._banks(runner)
        if not banks and not self._warned:
            self._warned = True
            runner.logger.warning(
                'SoftLabelBankHook: the model has no SoftLabelBank (label '
                'loss off?); the hook has nothing to do.')
        return banks

    def before_train(self, runner) -> None:
        for _, bank in self._banks_or_warn(runner):
            if int(bank.last_epoch) >= runner.epoch:
                bank.last_epoch.fill_(runner.epoch - 1)
            if dist.get_rank() != 0:  # loaded sums are totals: count once
                for key in self.partial_buffers:
                    getattr(bank, key).zero_()

    @classmethod
    def fold(cls, bank: SoftLabelBank, epoch: int) -> None:
        """Sum the partial sums over all processes and fold them into the
        bank (collective: call on every process)."""
        for key in cls.partial_buffers:
            dist.all_reduce(getattr(bank, key))
        bank.update(epoch)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        self._mid_epoch = True

    def after_train_epoch(self, runner) -> None:
        self._mid_epoch = False
        epoch = runner.epoch
        for _, bank in self._banks_or_warn(runner):
            if int(bank.last_epoch) != epoch:
                self.fold(bank, epoch)
        if (self.save_interval and (epoch + 1) % self.save_interval == 0
                and dist.is_main_process()):
            for name, bank in self._banks(runner):
                self._dump(runner, name, bank, epoch + 1)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self._mid_epoch or dist.get_world_size() == 1:
            return
        state = checkpoint.get('state_dict', {})
        for name, bank in self._banks(runner):
            for key in self.partial_buffers:
                total = getattr(bank, key).clone()
                dist.all_reduce(total)
                state[f'{name}.{key}' if name else key] = total.cpu()

    def _dump(self, runner, name: str, bank: SoftLabelBank, epoch: int):
        classes = None
        try:
            classes = runner.train_dataloader.dataset.metainfo.get('classes')
        except Exception:  # no dataset metainfo: fall back to indices
            pass
        if classes is None or len(classes) != bank.num_classes:
            classes = [str(i) for i in range(bank.num_classes)]
        folder = osp.join(runner.work_dir, self.out_dir)
        os.makedirs(folder, exist_ok=True)
        suffix = f'_{name.replace(".", "_")}' if name != 'soft_label_bank' \
            else ''
        path = osp.join(folder, f'epoch_{epoch}{suffix}.json')
        record = dict(
            epoch=epoch,
            classes=list(classes),
            correct_counts=bank.last_counts.tolist(),
            bank={c: row for c, row in zip(classes, bank.bank.tolist())})
        with open(path, 'w') as f:
            json.dump(record, f, indent=1)
