"""Epoch-based training loop that resumes in the middle of an epoch."""
from mmengine.runner import EpochBasedTrainLoop
from mmpretrain.registry import LOOPS


@LOOPS.register_module()
class SafeEpochBasedTrainLoop(EpochBasedTrainLoop):
    """:class:`EpochBasedTrainLoop` that can continue a half-done epoch.

    mmengine's loop always starts an epoch from its first batch. After a
    resume from a checkpoint taken in the middle of an epoch (iteration
    checkpoints, ``CheckpointHook(by_epoch=False)``), that replays the
    batches trained before the checkpoint: they are trained twice, the run
    ends with more iterations than planned, and state accumulated over the
    epoch (the soft-label bank's running sums, saved in the checkpoint) counts
    them twice. Here :class:`~skd_bnn_mm.engine.runner.SafeRunner` sets
    :attr:`skip_batches` on resume and the first epoch passes over that many
    batches without training on them. They are still drawn from the data
    loader (the sampler's order is per epoch), which costs loading time only.
    """

    #: batches of the current epoch that were trained before the checkpoint
    skip_batches: int = 0

    def run_epoch(self) -> None:
        skip, self.skip_batches = self.skip_batches, 0
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        for idx, data_batch in enumerate(self.dataloader):
            if idx < skip:
                continue
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1
