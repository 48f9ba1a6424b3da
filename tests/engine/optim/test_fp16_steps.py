"""SKD-BNN ResNet-20 under fp32, fp16 with dynamic loss scaling and bf16.

30 training steps of the paper's model (``skd-bnn_resnet20_1xb128_cifar10``:
SGD lr 0.1 at batch 128 scaled linearly to the batch used, momentum 0.9,
weight decay 1e-4; EDE at its epoch-0 state,
``k = 1000``, ``t = 1e-3``) on one fixed sequence of real CIFAR-10 batches,
from the same initial weights, in each precision through the optim wrappers
``tools/train.py --amp fp16 / bf16`` selects on a CPU. The soft-label bank
is folded after step 15 (an "epoch end"), so the last 15 steps also have
the KL loss. Recorded per step: every loss part, whether the optimizer step
was skipped, the loss scale; at the end, on 100 test images in eval mode,
the fraction of binary activations (the inputs of the binary convs, after
``sign``; BatchNorm in batch-statistics mode) and of binary weights whose
sign differs from the fp32 model's.

CPU fp16 convolutions compute their weight gradients ~50x slower than fp32
ones (PyTorch's CPU kernels), so the test uses batches of 4 images; the
figures in docs/speed.md come from running this file as a script:

    python tests/engine/optim/test_fp16_steps.py --batch-size 32 --data-root DIR
"""
import argparse
import copy
import os.path as osp
import pickle
import sys
import time

import numpy as np
import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
CONFIG = osp.join(ROOT, 'configs', 'skd_bnn',
                  'skd-bnn_resnet20_1xb128_cifar10.py')
PARTS = ('loss_cls', 'loss_feat', 'loss_label', 'loss_cluster')
STEPS = 30
FOLD_AFTER = 15


def load_cifar(root, split):
    """Images ``[N, 3, 32, 32]`` uint8 and labels of the pickle layout."""
    folder = osp.join(root, 'cifar-10-batches-py')
    names = ([f'data_batch_{i}' for i in range(1, 6)] if split == 'train'
             else ['test_batch'])
    images, labels = [], []
    for name in names:
        with open(osp.join(folder, name), 'rb') as f:
            d = pickle.load(f, encoding='latin1')
        images.append(np.asarray(d['data'], dtype=np.uint8))
        labels += list(d['labels'])
    x = np.concatenate(images).reshape(-1, 3, 32, 32)
    return torch.from_numpy(x), torch.tensor(labels)


def _batch(images, labels):
    from mmpretrain.structures import DataSample
    return dict(inputs=images,
                data_samples=[DataSample().set_gt_label(int(y))
                              for y in labels])


def _build(amp, batch_size):
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    from skd_bnn_mm.engine.optim import amp_optim_wrapper_cfg
    cfg = Config.fromfile(CONFIG)
    model_cfg = copy.deepcopy(cfg.model.to_dict())
    model_cfg['data_preprocessor'] = cfg.data_preprocessor.to_dict()
    wrapper_cfg = amp_optim_wrapper_cfg(cfg.optim_wrapper.to_dict(), amp,
                                        'cpu')
    # the recipe's lr for its batch of 128, scaled linearly to batch_size
    wrapper_cfg['optimizer']['lr'] *= batch_size / 128
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        torch.manual_seed(0)
        model = MODELS.build(model_cfg)
        model.init_weights()
        model.train()
        return model, build_optim_wrapper(model, wrapper_cfg)


def _signs(model, images, dtype):
    """Signs (x >= 0) of every binary conv's input and binary weight on
    ``images`` under autocast to ``dtype`` (None: float32), BatchNorm with
    the batch's statistics (on a copy: the running ones stay as they are).
    """
    from skd_bnn_mm.models.layers import IRConv2d
    model = copy.deepcopy(model)
    convs = [m for m in model.modules() if isinstance(m, IRConv2d)]
    acts = []
    for c in convs:
        c.register_forward_pre_hook(
            lambda mod, args: acts.append((args[0] >= 0).flatten()))
    with torch.no_grad(), torch.autocast('cpu', dtype=dtype or torch.float32,
                                         enabled=dtype is not None):
        data = model.data_preprocessor(_batch(images, [0] * len(images)),
                                       False)
        model(data['inputs'], mode='tensor')
        weights = [(c.standardized_weight() >= 0).flatten() for c in convs]
    return acts, weights


def run(amp, train, test, batch_size, steps=STEPS):
    """Train ``steps`` steps with ``amp`` ('none', 'fp16', 'bf16')."""
    from mmengine.logging import MMLogger
    MMLogger.get_instance('fp16_steps', log_level='WARNING')
    model, wrapper = _build(amp, batch_size)
    dtype = {'none': None, 'fp16': torch.float16,
             'bf16': torch.bfloat16}[amp]
    images, labels = train
    first = _signs(model, test[0], dtype)
    losses, skipped, scales = [], [], []
    start = time.perf_counter()
    for step in range(steps):
        sl = slice(step * batch_size, (step + 1) * batch_size)
        before = getattr(wrapper, 'skipped_steps', 0)
        log_vars = model.train_step(_batch(images[sl], labels[sl]), wrapper)
        losses.append({k: float(log_vars[k]) for k in PARTS})
        skipped.append(getattr(wrapper, 'skipped_steps', 0) > before)
        scaler = getattr(wrapper, 'loss_scaler', None)
        scales.append(scaler.get_scale() if scaler is not None else None)
        if step + 1 == FOLD_AFTER:
            model.soft_label_bank.update(epoch=0)
    seconds = time.perf_counter() - start
    return dict(losses=losses, skipped=skipped, scales=scales,
                first_signs=first, signs=_signs(model, test[0], dtype),
                seconds=seconds)


def sign_difference(a, b, layer=None):
    """Fractions of activation and weight signs that differ, over all binary
    convs or in the ``layer``-th one."""
    def frac(x, y):
        if layer is not None:
            x, y = x[layer], y[layer]
        else:
            x, y = torch.cat(x), torch.cat(y)
        return float((x != y).float().mean())
    return frac(a[0], b[0]), frac(a[1], b[1])


def compare(root, batch_size, modes=('none', 'fp16', 'bf16')):
    train_x, train_y = load_cifar(root, 'train')
    order = torch.randperm(len(train_y),
                           generator=torch.Generator().manual_seed(0))
    need = STEPS * batch_size
    if len(order) < need:
        raise ValueError(f'{need} training images needed, {root} has '
                         f'{len(order)}')
    order = order[:need]
    test_x, test_y = load_cifar(root, 'test')
    train = (train_x[order], train_y[order])
    test = (test_x[:100], test_y[:100])
    return {amp: run(amp, train, test, batch_size) for amp in modes}


def table(results):
    """Markdown table: per step fp32 | fp16 | bf16 of each loss part."""
    modes = list(results)
    head = ['step'] + [f'{p[5:]} {m}' for p in PARTS for m in modes] + [
        'fp16 scale', 'fp16 skipped']
    lines = ['| ' + ' | '.join(head) + ' |',
             '|' + '---:|' * len(head)]
    fp16 = results.get('fp16')
    for i in range(len(results[modes[0]]['losses'])):
        row = [str(i + 1)]
        for p in PARTS:
            row += [f"{results[m]['losses'][i][p]:.4f}" for m in modes]
        if fp16 is not None:
            row += [f"{fp16['scales'][i]:g}", 'yes' if fp16['skipped'][i]
                    else '']
        lines.append('| ' + ' | '.join(row) + ' |')
    return '\n'.join(lines)


def summary(results):
    ref = results['none']
    out = []
    for amp, r in results.items():
        act0, w0 = sign_difference(r['first_signs'], ref['first_signs'])
        act, w = sign_difference(r['signs'], ref['signs'])
        first = sign_difference(r['first_signs'], ref['first_signs'], 0)[0]
        last = sign_difference(r['first_signs'], ref['first_signs'], -1)[0]
        worst = {p: max(abs(a[p] - b[p]) for a, b in zip(r['losses'],
                                                         ref['losses']))
                 for p in PARTS}
        out.append(
            f"{amp}: {r['seconds']:.1f} s for {len(r['losses'])} steps, "
            f"skipped steps {sum(r['skipped'])} "
            f"(at {[i + 1 for i, s in enumerate(r['skipped']) if s]}), "
            f"final scale {r['scales'][-1]}, activation signs differing "
            f'from fp32: {act0:.4%} before training (first binary conv '
            f'{first:.4%}, last {last:.4%}), {act:.4%} after; '
            f'binary weight signs {w0:.4%} / {w:.4%}; largest |difference| '
            'from fp32 per part: '
            + ', '.join(f'{p} {v:.4f}' for p, v in worst.items()))
    return '\n'.join(out)


# ------------------------------------------------------------------ test
#: Stated tolerances. A binary network does not follow fp32 step by step:
#: rounding moves a few pre-activations across 0 and the flipped signs
#: spread (at the first forward, with the same weights, 0.01% of the first
#: binary conv's input signs differ in fp16 and ~47% of the last one's), so
#: the runs separate within a few steps. Bounded, per step: every part
#: within a factor of 5 of fp32's, |a - b| <= 0.8 * max(|a|, |b|) + ATOL;
#: at step 1 (same weights) within STEP1; the means over windows of 10
#: steps within WINDOW (not the KL part: its bank holds the logits of the
#: few samples the run classified right in 15 steps of 4 images).
#: Measured in docs/speed.md.
RTOL = 0.8
ATOL = {'loss_cls': 0.0, 'loss_feat': 0.0, 'loss_label': 5e-3,
        'loss_cluster': 3e-4}
STEP1 = {'loss_cls': 0.3, 'loss_feat': 0.1, 'loss_cluster': 0.3}
WINDOW = {'loss_cls': 0.3, 'loss_feat': 0.5, 'loss_cluster': 0.3}
#: steps in which an fp16 overflow may skip the step while the scale
#: settles from 2^16 (measured: steps 1, 2, 4 and 7)
SETTLE = 10

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def results(cifar10_subset):
    torch.set_num_threads(1)  # deterministic and fair on a shared CPU
    return compare(cifar10_subset(20, 10), batch_size=4)


@pytest.mark.parametrize('amp', ['fp16', 'bf16'])
def test_every_loss_part_stays_near_fp32(results, amp):
    ref, got = results['none']['losses'], results[amp]['losses']
    assert len(got) == STEPS
    for step, (a, b) in enumerate(zip(got, ref), 1):
        for part in PARTS:
            assert np.isfinite(a[part]), (amp, step, part)
            bound = ATOL[part] + RTOL * max(abs(a[part]), abs(b[part]))
            assert abs(a[part] - b[part]) <= bound, (amp, step, part, a[part],
                                                     b[part])
    for part, tol in STEP1.items():
        assert abs(got[0][part] - ref[0][part]) <= \
            tol * abs(ref[0][part]) + ATOL[part], (amp, part)
    for start in range(0, STEPS, 10):
        for part, tol in WINDOW.items():
            mean_a = np.mean([r[part] for r in got[start:start + 10]])
            mean_b = np.mean([r[part] for r in ref[start:start + 10]])
            assert abs(mean_a - mean_b) <= tol * abs(mean_b) + ATOL[part], \
                (amp, start, part, mean_a, mean_b)
    # the KL part is off until the bank holds an epoch, then on
    assert all(r['loss_label'] == 0 for r in got[:FOLD_AFTER])
    assert all(r['loss_label'] > 0 for r in got[FOLD_AFTER:])


def test_fp16_scale_settles_and_no_later_step_is_skipped(results):
    r = results['fp16']
    assert not any(r['skipped'][SETTLE:]), r['skipped']
    # dynamic scaling: starts at 2^16, only halves (skips) in 30 steps
    assert r['scales'][-1] == 65536.0 / 2**sum(r['skipped'])
    assert r['scales'][-1] >= 1024.0
    assert results['bf16']['scales'][-1] is None  # bf16: no loss scaling


def test_sign_flips_relative_to_fp32(results):
    ref = results['none']
    first = {}
    for amp in ('fp16', 'bf16'):
        r = results[amp]
        act0, w0 = sign_difference(r['first_signs'], ref['first_signs'])
        first[amp] = sign_difference(r['first_signs'], ref['first_signs'],
                                     0)[0]
        _, w = sign_difference(r['signs'], ref['signs'])
        assert w0 == 0.0  # same initial weights, standardised in float32
        assert 0 < act0 < 0.3, (amp, act0)
        assert w < 0.2, (amp, w)  # 30 steps later: most weights agree
    # rounding alone flips few first-layer inputs, fp16 (11 significant
    # bits) fewer than bf16 (8)
    assert 0 < first['fp16'] < first['bf16'] < 0.005, first


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', required=True,
                        help='CIFAR-10 in the pickle layout (make_cifar10.py)')
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, ROOT)
    from mmengine.registry import DefaultScope

    import skd_bnn_mm  # noqa: F401
    DefaultScope.get_instance('fp16_steps', scope_name='mmpretrain')
    res = compare(args.data_root, args.batch_size)
    print(table(res))
    print(summary(res))
