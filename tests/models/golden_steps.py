"""Five SKD-BNN training steps whose exact results are pinned in
``tests/data/golden_steps.json`` (see ``test_golden_steps.py``).

Everything that could change for reasons other than what the model computes
is fixed here: every parameter, BN statistic and EDE coefficient is set from
a seeded generator after the model is built (default inits may change), the
data preprocessor and optimizer are given explicitly, one CPU thread is used
(multi-threaded reductions may split differently). The soft-label bank starts
filled (so ``loss_label`` is not zero) and is folded once, as at an epoch end,
after the third step.

Results are recorded per platform (:func:`platform_key`). Record this
platform's entry (only from code known to be right, e.g. a commit whose
results match on a platform already recorded; other platforms' entries are
kept)::

    python tests/models/golden_steps.py --write
"""
import argparse
import copy
import hashlib
import json
import math
import os.path as osp
import platform
import sys

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from torch.nn.modules.batchnorm import _BatchNorm

GOLDEN = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'data',
                  'golden_steps.json')

#: config file (relative to the repository root) of each pinned model
CONFIGS = {
    'resnet20': 'configs/skd_bnn/skd-bnn_resnet20_1xb128_cifar10.py',
    'vgg-small': 'configs/skd_bnn/skd-bnn_vgg-small_1xb128_cifar10.py',
    'resnet18': 'configs/skd_bnn/skd-bnn_resnet18_1xb128_cifar10.py',
}
STEPS, BATCH, SEED = 5, 8, 20240
EDE_K, EDE_T = 2.0, 0.5
BANK_UPDATE_AFTER = 3
BANK_BUFFERS = ('bank', 'sums', 'counts', 'last_counts', 'num_updates',
                'last_epoch')


def cpu_model() -> str:
    """The CPU's model name: kernels with the same vector unit still round
    differently across CPU vendors (MKL and oneDNN pick kernels per CPU)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def platform_key() -> dict:
    """What bitwise float results depend on besides the code."""
    return dict(torch=torch.__version__.split('+')[0],
                cpu_capability=torch.backends.cpu.get_cpu_capability(),
                machine=platform.machine(), cpu=cpu_model())


def load_golden() -> dict:
    with open(GOLDEN) as f:
        return json.load(f)


def golden_for(golden: dict, key: dict):
    """The recorded results of platform ``key``, or None."""
    for entry in golden['platforms']:
        if entry['platform'] == key:
            return entry['models']
    return None


def _build(root: str, name: str):
    from mmpretrain.registry import MODELS

    import skd_bnn_mm  # noqa: F401  (registers the modules)
    cfg = Config.fromfile(osp.join(root, CONFIGS[name]))
    model_cfg = copy.deepcopy(cfg.model.to_dict())
    model_cfg['data_preprocessor'] = dict(
        type='ClsDataPreprocessor', num_classes=10,
        mean=[125.307, 122.961, 113.8575], std=[62.993, 62.089, 66.705],
        to_rgb=False)
    return MODELS.build(model_cfg)


@torch.no_grad()
def _set_state(model, g: torch.Generator) -> None:
    """Every parameter and BN statistic from ``g``, by sorted name."""
    for name, p in sorted(model.named_parameters()):
        if p.dim() >= 2:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=g) * math.sqrt(2 / fan_in))
        elif name.endswith('bias'):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        else:
            p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    for name, m in sorted(model.named_modules(), key=lambda kv: kv[0]):
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            m.running_mean.copy_(torch.randn(m.running_mean.shape,
                                             generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape,
                                           generator=g) + 0.5)
        if callable(getattr(m, 'set_ede', None)):
            m.set_ede(EDE_K, EDE_T)
    bank = model.soft_label_bank
    c = bank.num_classes
    bank.bank.copy_(torch.randn(c, c, generator=g) * 2)
    bank.num_updates.fill_(1)
    bank.last_epoch.fill_(0)


def _batch(g: torch.Generator):
    from mmpretrain.structures import DataSample
    images = torch.randint(0, 256, (BATCH, 3, 32, 32), generator=g,
                           dtype=torch.uint8)
    # few classes, so that classes repeat (the cluster loss is per class)
    labels = torch.randint(0, 4, (BATCH, ), generator=g)
    return dict(inputs=list(images.unbind(0)),
                data_samples=[DataSample().set_gt_label(int(y))
                              for y in labels])


def _sha(tensors) -> str:
    h = hashlib.sha256()
    for name, t in tensors:
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def run_steps(root: str, name: str) -> dict:
    """The five steps of model ``name``: loss parts (float.hex) per step and
    the sha256 of the final parameters, BN statistics and bank."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(SEED)
        model = _build(root, name).train()
        _set_state(model, g)
        data = _batch(g)
        optim = build_optim_wrapper(model, dict(optimizer=dict(
            type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4)))
        steps = []
        for step in range(STEPS):
            batch = model.data_preprocessor(data, True)
            losses = model(**batch, mode='loss')
            total, _ = model.parse_losses(losses)
            optim.update_params(total)
            parts = {k: float(v.detach()).hex() for k, v in losses.items()}
            parts['total'] = float(total.detach()).hex()
            steps.append(parts)
            if step + 1 == BANK_UPDATE_AFTER:
                model.soft_label_bank.update(epoch=1)
        bn = [(f'{n}.{b}', getattr(m, b)) for n, m in model.named_modules()
              if isinstance(m, _BatchNorm) and m.track_running_stats
              for b in ('running_mean', 'running_var', 'num_batches_tracked')]
        bank = model.soft_label_bank
        return dict(
            steps=steps,
            params=_sha(sorted(model.named_parameters())),
            bn_stats=_sha(sorted(bn)),
            bank=_sha([(b, getattr(bank, b)) for b in BANK_BUFFERS]),
            # correct predictions per class folded into the bank (readable
            # evidence that the fold saw some)
            bank_counts=bank.last_counts.tolist())
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--write', action='store_true',
                        help=f'write {GOLDEN}; else print the results')
    args = parser.parse_args()
    import skd_bnn_mm
    root = osp.dirname(osp.dirname(osp.abspath(skd_bnn_mm.__file__)))
    print(f'skd_bnn_mm from {skd_bnn_mm.__file__}', file=sys.stderr)
    key = platform_key()
    entry = dict(platform=key,
                 models={n: run_steps(root, n) for n in CONFIGS})
    if args.write:  # this platform's entry; the other platforms' stay
        golden = load_golden() if osp.isfile(GOLDEN) else dict(platforms=[])
        if (golden.get('seed'), golden.get('batch'), golden.get('ede')) not \
                in ((None, None, None), (SEED, BATCH, [EDE_K, EDE_T])):
            sys.exit('the recorded platforms used another seed, batch or '
                     'EDE state: record them all again')
        golden.update(seed=SEED, batch=BATCH, ede=[EDE_K, EDE_T])
        golden['platforms'] = [e for e in golden['platforms']
                               if e['platform'] != key] + [entry]
        with open(GOLDEN, 'w') as f:
            f.write(json.dumps(golden, indent=1, sort_keys=True) + '\n')
    print(json.dumps(entry, indent=1, sort_keys=True))


if __name__ == '__main__':
    main()
