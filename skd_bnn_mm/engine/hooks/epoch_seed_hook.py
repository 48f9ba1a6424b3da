"""Random state as a function of (seed, epoch, sample): exact resumes."""
import random
from typing import Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

# keep the main-process stream and the per-sample streams apart
_MAIN, _SAMPLE = 0, 1


def derive_seed(*keys: int) -> int:
    """A 32-bit seed mixed from non-negative integers (numpy SeedSequence),
    so that nearby keys give unrelated streams."""
    return int(np.random.SeedSequence([int(k) for k in keys])
               .generate_state(1, dtype=np.uint32)[0])


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class SeededPipeline:
    """Wraps a data pipeline: sample ``i`` of epoch ``e`` is transformed with
    the global generators seeded from ``(seed, e, i)``.

    The caller's generator states are restored afterwards, so data loading
    in the main process (``num_workers=0``) does not disturb the model's
    random stream. ``seed`` and ``epoch`` live in a shared-memory tensor that
    the hook updates every epoch: data-loader workers, persistent ones
    included, see the current values. Attribute access falls through to the
    wrapped pipeline (e.g. ``.transforms``).
    """

    def __init__(self, pipeline, state: torch.Tensor) -> None:
        self.pipeline = pipeline
        self.state = state  # int64 [seed, epoch], shared memory

    def __call__(self, data_info):
        idx = data_info.get('sample_idx') if isinstance(data_info, dict) \
            else None
        if idx is None:  # not an mmengine BaseDataset sample: leave as is
            return self.pipeline(data_info)
        seed, epoch = (int(v) for v in self.state.tolist())
        saved = (random.getstate(), np.random.get_state(),
                 torch.random.get_rng_state())
        try:
            seed_everything(derive_seed(seed, epoch, _SAMPLE, int(idx)))
            return self.pipeline(data_info)
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.random.set_rng_state(saved[2])

    def __getattr__(self, name):
        if name in ('pipeline', 'state'):  # during unpickling
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    def __repr__(self) -> str:
        return f'SeededPipeline({self.pipeline!r})'


def _datasets(dataset):
    """The dataset and the datasets it wraps (Concat/Repeat/ClassBalanced)."""
    yield dataset
    inner = getattr(dataset, 'dataset', None)
    if inner is not None and inner is not dataset:
        yield from _datasets(inner)
    for inner in getattr(dataset, 'datasets', None) or []:
        yield from _datasets(inner)


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Make data order and augmentation a function of (seed, epoch) only.

    mmengine seeds the generators once per run. With ``num_workers=0`` the
    augmentation then draws from one stream that runs through all epochs, so
    a run resumed at epoch ``e`` draws differently from an uninterrupted one
    (and with ``num_workers > 0`` the workers are re-seeded with the same
    seeds every epoch). This hook, before every training epoch:

    - seeds the main process's generators (``random``, numpy, torch) from
      ``(seed, epoch)``;
    - transforms every training sample with generators seeded from
      ``(seed, epoch, sample index)`` (:class:`SeededPipeline`): the same
      augmentation whatever the number of workers or processes, and however
      the samples are batched;
    - gives the sampler the runner's seed, which after a resume is the
      checkpoint's (mmengine builds the sampler before the resume re-seeds
      the runner, which matters when the config's ``seed`` is None).

    With ``randomness=dict(seed=S, deterministic=True)`` a run resumed from
    an epoch checkpoint then ends with exactly the weights of an
    uninterrupted run on the same machine. ``seed`` is ``runner.seed``; with
    ``diff_rank_seed=True`` it differs per process, and so do the streams.

    Args:
        seed_samples (bool): wrap the training pipelines for per-sample
            seeding. Defaults to True.
    """

    priority = 'VERY_HIGH'

    def __init__(self, seed_samples: bool = True) -> None:
        self.seed_samples = seed_samples
        self._state: Optional[torch.Tensor] = None

    def before_train(self, runner) -> None:
        if not self.seed_samples:
            return
        self._state = torch.zeros(2, dtype=torch.long).share_memory_()
        wrapped = 0
        for dataset in _datasets(runner.train_dataloader.dataset):
            pipeline = getattr(dataset, 'pipeline', None)
            if pipeline is None or isinstance(pipeline, SeededPipeline):
                continue
            dataset.pipeline = SeededPipeline(pipeline, self._state)
            wrapped += 1
        if not wrapped:
            runner.logger.warning(
                'EpochSeedHook: the training dataset has no `pipeline` to '
                'seed per sample; only the main process is re-seeded every '
                'epoch.')

    def before_train_epoch(self, runner) -> None:
        seed, epoch = int(runner.seed), int(runner.epoch)
        if self._state is not None:
            self._state.copy_(torch.tensor([seed, epoch]))
        randomness = getattr(runner, '_randomness_cfg', None) or {}
        sampler = getattr(runner.train_dataloader, 'sampler', None)
        if (not randomness.get('diff_rank_seed', False)
                and hasattr(sampler, 'seed')):
            sampler.seed = seed
        seed_everything(derive_seed(seed, epoch, _MAIN))
