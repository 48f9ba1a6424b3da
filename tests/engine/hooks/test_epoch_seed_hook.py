"""EpochSeedHook on real runners: data order and augmentation as a function
of (seed, epoch, sample) only, so that a resumed run draws what an
uninterrupted one would (the bit-exact resume of a whole SKD-BNN run is
tests/reliability/test_crash_resume.py).

The runners train a one-layer model on the tiny config's CIFAR-10 training
set (its pipeline: 4-pixel padded random crop, flip), 7 batches an epoch.
"""
import copy
import os.path as osp
import random

import numpy as np
import pytest
import torch
import torch.nn as nn
from hook_runner_case import HookRunnerCase, get_hook
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import HOOKS, MODELS
from mmpretrain.registry import DATASETS

from skd_bnn_mm.engine.hooks.epoch_seed_hook import SeededPipeline

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
TINY = osp.join(ROOT, 'tests', 'data', 'tiny_skd_cifar10.py')
PROBE = 7  # the sample whose augmentation is compared


class MeanColourModel(BaseModel):
    """A linear layer on the mean colour of each image: fast, no random
    state of its own."""

    def __init__(self, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.fc = nn.Linear(3, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if isinstance(inputs, list):
            inputs = torch.stack(inputs)
        out = self.fc(inputs.float().mean((2, 3)) / 255)
        if mode == 'loss':
            return dict(loss=out.square().mean())
        return out


class AugmentationProbeHook(Hook):
    """Per epoch (after EpochSeedHook): the runner's and the sampler's seed,
    the augmented sample ``PROBE`` at the start and at the end of the epoch
    (or, with ``main_draws``, one draw of each global generator at the
    start), and the sample indices trained."""

    priority = 'NORMAL'

    def __init__(self, main_draws=False):
        self.main_draws = main_draws
        self.epochs = {}

    def _probe(self, runner):
        return runner.train_dataloader.dataset[PROBE]['inputs'].clone()

    def before_train_epoch(self, runner):
        seen = self.epochs[runner.epoch] = dict(
            seed=runner.seed, sampler_seed=runner.train_dataloader.sampler
            .seed, order=[])
        if self.main_draws:
            seen['draws'] = (torch.rand(3), np.random.rand(), random.random())
        else:
            seen['image'] = self._probe(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.epochs[runner.epoch]['order'] += [
            int(s.sample_idx) for s in data_batch['data_samples']]

    def after_train_epoch(self, runner):
        if not self.main_draws:  # after the epoch's 200 draws
            self.epochs[runner.epoch]['image_end'] = self._probe(runner)


class TestEpochSeedHook(HookRunnerCase):

    @pytest.fixture(autouse=True)
    def _data_root(self, cifar10_subset):
        self.data_root = cifar10_subset(20, 10)

    def setUp(self):
        super().setUp()
        MODELS.register_module(module=MeanColourModel, force=True)
        HOOKS.register_module(module=AugmentationProbeHook, force=True)

    def tearDown(self):
        MODELS.module_dict.pop('MeanColourModel', None)
        HOOKS.module_dict.pop('AugmentationProbeHook', None)
        super().tearDown()

    def _dataset_cfg(self):
        cfg = Config.fromfile(TINY).train_dataloader.dataset
        cfg.data_root, cfg.verify_md5 = self.data_root, False
        return cfg

    def _run(self, name, seed=0, epochs=3, resume_from=None,
             seed_samples=True, main_draws=False):
        """Train ``epochs`` epochs in work dir ``name`` (or resume there from
        ``resume_from``); the runner and what the probe saw per epoch."""
        cfg = copy.deepcopy(self.epoch_based_cfg)
        cfg.work_dir = osp.join(self.temp_dir.name, name)
        cfg.model = dict(type='MeanColourModel')
        cfg.train_dataloader = dict(
            dataset=self._dataset_cfg(), batch_size=32, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=True))
        for key in ('val_dataloader', 'val_evaluator', 'val_cfg',
                    'test_dataloader', 'test_evaluator', 'test_cfg'):
            cfg[key] = None
        cfg.train_cfg = dict(by_epoch=True, max_epochs=epochs)
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
        cfg.custom_hooks = [
            dict(type='EpochSeedHook', seed_samples=seed_samples),
            dict(type='AugmentationProbeHook', main_draws=main_draws)]
        cfg.randomness = dict(seed=seed)
        if resume_from is not None:
            cfg.resume, cfg.load_from = True, resume_from
        runner = self.build_runner(cfg)
        built_seed = runner.seed
        runner.train()
        runner.built_seed = built_seed
        return runner, get_hook(runner, AugmentationProbeHook).epochs

    def _ckpt(self, name, epoch):
        return osp.join(self.temp_dir.name, name, f'epoch_{epoch}.pth')

    def test_augmentation_depends_on_seed_epoch_and_sample_only(self):
        # without the hook: the same sample in "epoch 2" depends on what was
        # drawn before (an interrupted and resumed run draws differently)
        plain = DATASETS.build(self._dataset_cfg())
        np.random.seed(0)
        plain[5]
        after_one = plain[PROBE]['inputs']
        np.random.seed(0)
        assert not torch.equal(plain[PROBE]['inputs'], after_one)

        runner, seen = self._run('a', seed=0)
        ds = runner.train_dataloader.dataset
        assert isinstance(ds.pipeline, SeededPipeline)
        assert ds.pipeline.transforms  # attributes fall through
        assert [seen[e]['sampler_seed'] for e in range(3)] == [0, 0, 0]
        x = seen[2]['image']
        # same (seed, epoch, sample) -> same image, whatever ran before: the
        # epoch's 200 samples ...
        for e in range(3):
            assert torch.equal(seen[e]['image_end'], seen[e]['image'])
        # ... or two epochs (a run resumed at epoch 3 trained none of them)
        _, resumed = self._run('b', seed=0, resume_from=self._ckpt('a', 2))
        assert list(resumed) == [2]
        assert torch.equal(resumed[2]['image'], x)
        assert resumed[2]['order'] == seen[2]['order']
        # ... and the caller's generators are left where they were
        for gen, draw in ((np.random, np.random.rand),
                          (random, random.random)):
            gen.seed(123)
            expected = draw()
            gen.seed(123)
            ds[4]
            assert draw() == expected
        torch.manual_seed(123)
        expected = torch.rand(2)
        torch.manual_seed(123)
        ds[4]
        assert torch.equal(torch.rand(2), expected)
        # another epoch or another seed -> another augmentation (random crop
        # with 4-pixel padding and flips: a collision over 3 draws would mean
        # the seed is ignored)
        _, seed_1 = self._run('c', seed=1)
        others = [seen[0]['image'], seen[1]['image'], seed_1[2]['image']]
        assert sum(torch.equal(o, x) for o in others) == 0

    def test_main_process_generators_follow_seed_and_epoch(self):
        runner, seen = self._run('a', seed=3, epochs=2, seed_samples=False,
                                 main_draws=True)
        assert not isinstance(runner.train_dataloader.dataset.pipeline,
                              SeededPipeline)
        _, resumed = self._run('b', seed=3, epochs=2, seed_samples=False,
                               main_draws=True,
                               resume_from=self._ckpt('a', 1))
        assert list(resumed) == [1]
        # what ran before epoch 2 differs: epoch 1's training in one
        # runner, a resume in the other
        draws = [seen[0]['draws'], seen[1]['draws'], resumed[1]['draws']]
        # epoch 2 resumed draws what epoch 2 of the uninterrupted run drew
        assert torch.equal(draws[1][0], draws[2][0])
        assert draws[1][1:] == draws[2][1:]
        assert not torch.equal(draws[0][0], draws[1][0])
        assert draws[0][1] != draws[1][1]

    def test_resume_gives_the_sampler_the_checkpoint_seed(self):
        """``randomness.seed=None``: each runner draws its own seed, and
        mmengine builds the sampler (with it) before the resume re-seeds the
        runner with the checkpoint's."""
        first, seen = self._run('a', seed=None, epochs=2)
        seed = first.seed
        assert [seen[e]['sampler_seed'] for e in (0, 1)] == [seed, seed]
        second, resumed = self._run('b', seed=None, epochs=2,
                                    resume_from=self._ckpt('a', 1))
        assert second.built_seed != seed  # the sampler was built with this
        assert second.seed == seed
        assert resumed[1]['seed'] == resumed[1]['sampler_seed'] == seed
        # so epoch 2 trains the samples of the uninterrupted run, in order,
        # augmented alike
        assert resumed[1]['order'] == seen[1]['order']
        assert sorted(seen[1]['order']) == list(range(200))
        assert seen[1]['order'] != seen[0]['order']
        assert torch.equal(resumed[1]['image'], seen[1]['image'])
