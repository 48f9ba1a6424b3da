"""Epoch-based training loop that resumes in the middle of an epoch."""
from mmengine import dist
from mmengine.model import is_model_wrapper
from mmengine.registry import LOOPS as ROOT_LOOPS
from mmengine.runner import EpochBasedTrainLoop
from mmpretrain.registry import LOOPS
from torch.nn.modules.batchnorm import _BatchNorm

#: message-hub key (saved in every checkpoint) of the epoch's progress
PROGRESS = 'epoch_progress'


@LOOPS.register_module()
class SafeEpochBasedTrainLoop(EpochBasedTrainLoop):
    """:class:`EpochBasedTrainLoop` that can continue a half-done epoch.

    mmengine's loop always starts an epoch from its first batch. After a
    resume from a checkpoint taken in the middle of an epoch (iteration
    checkpoints, ``CheckpointHook(by_epoch=False)``), that replays the
    batches trained before the checkpoint: they are trained twice, and state
    accumulated over the epoch (the soft-label bank's running sums, saved in
    the checkpoint) counts them twice.

    Here every iteration records in the message hub (so in every checkpoint)
    how many samples of the epoch's order were trained; on resume the first
    epoch passes over exactly those samples. mmengine's ``DefaultSampler``
    gives iteration ``i`` the positions ``[i*G, (i+1)*G)`` of the epoch's
    order, ``G`` = processes x batch size, so a resume with another number
    of processes or batch size skips ``samples / G`` batches; when ``G``
    does not divide the samples done, the resume is refused (with what to
    do), since any other choice trains some images twice or never. The
    skipped batches are still drawn from the data loader (the sampler's
    order is per epoch), which costs loading time only. The loop's
    iteration counter is recomputed for the new batches per epoch.

    Before the first epoch it also refuses a training loader whose last
    batch would hold a single sample per process for a model with
    BatchNorm (which fails on it after a whole epoch of work).

    Named in the configs' ``train_cfg``, so it works with any runner
    (mmengine's ``Runner.from_cfg`` too).
    """

    def _global_batch(self) -> int:
        return (self.dataloader.batch_size or 1) * dist.get_world_size()

    def _check_last_batch(self) -> None:
        loader = self.dataloader
        sampler = getattr(loader, 'sampler', None)
        size = loader.batch_size
        if loader.drop_last or not size or size < 2 or \
                not hasattr(sampler, '__len__'):
            return
        per_rank = len(sampler)
        if per_rank % size != 1:
            return
        model = self.runner.model.module if is_model_wrapper(
            self.runner.model) else self.runner.model
        if not any(isinstance(m, _BatchNorm) for m in model.modules()):
            return
        raise ValueError(
            f'The last training batch of every epoch would hold 1 sample '
            f'({per_rank} samples per process, batch_size {size}): '
            'BatchNorm cannot train on a single sample and would fail at the '
            'end of the first epoch. Set train_dataloader.drop_last=True, or '
            'choose a batch size that does not leave one sample over.')

    def _plan_resume(self) -> int:
        """Batches of the current epoch to pass over; fixes ``_iter``."""
        per_epoch = len(self.dataloader)
        if self._iter == 0 and self._epoch == 0:
            return 0
        info = self.runner.message_hub.get_info(PROGRESS)
        if isinstance(info, dict) and info.get('epoch') == self._epoch:
            samples = int(info['samples'])
            world, size = info.get('world_size'), info.get('batch_size')
        elif isinstance(info, dict):  # saved at an epoch end
            samples = world = size = 0
        else:  # a checkpoint without progress: same batches assumed
            done = self._iter - self._epoch * per_epoch
            if not 0 <= done <= per_epoch:
                raise ValueError(
                    f'Cannot resume: the checkpoint\'s iteration '
                    f'{self._iter} does not fall in epoch {self._epoch + 1} '
                    f'at {per_epoch} iterations per epoch, and it does not '
                    'record the samples it trained (batch size, data or '
                    'number of processes changed?). Resume with the batch '
                    'size and processes it was saved with, or from an epoch '
                    'checkpoint; nothing was changed.')
            samples = done * self._global_batch()
            world = size = None
        total = len(self.dataloader.dataset)
        group = self._global_batch()
        if samples == 0:
            skip = 0
        elif samples >= total:
            skip = per_epoch
        elif samples % group == 0:
            skip = samples // group
        else:
            raise ValueError(
                f'Cannot resume in the middle of epoch {self._epoch + 1}: '
                f'the checkpoint was taken after {samples} samples of it '
                f'({world} process(es) x batch {size}), which is not a whole '
                f'number of steps of {dist.get_world_size()} process(es) x '
                f'batch {self.dataloader.batch_size} = {group} samples; '
                'any other choice would train some images twice or never. '
                'Resume with processes x batch size dividing '
                f'{samples}, or from an epoch checkpoint; nothing was '
                'changed.')
        new_iter = self._epoch * per_epoch + skip
        if skip:
            self.runner.logger.info(
                f'Resuming in the middle of epoch {self._epoch + 1}: its '
                f'first {samples} samples ({skip} of {per_epoch} batches) '
                'were trained before the checkpoint and are skipped.')
        if new_iter != self._iter:
            self.runner.logger.warning(
                f'Resume: iteration counter {self._iter} -> {new_iter} '
                f'({per_epoch} batches per epoch with '
                f'{dist.get_world_size()} process(es) x batch '
                f'{self.dataloader.batch_size}).')
            self._iter = new_iter
        return skip

    def run(self):
        self._check_last_batch()
        self._skip = self._plan_resume()
        return super().run()

    def run_epoch(self) -> None:
        skip, self._skip = getattr(self, '_skip', 0), 0
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        total = len(self.dataloader.dataset)
        group = self._global_batch()
        hub = self.runner.message_hub
        for idx, data_batch in enumerate(self.dataloader):
            if idx < skip:
                continue
            hub.update_info(PROGRESS, dict(
                epoch=self._epoch, samples=min((idx + 1) * group, total),
                world_size=dist.get_world_size(),
                batch_size=self.dataloader.batch_size))
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1


# found by mmengine's root registry too (any default scope)
if 'SafeEpochBasedTrainLoop' not in ROOT_LOOPS.module_dict:
    ROOT_LOOPS.register_module(module=SafeEpochBasedTrainLoop)
