"""Five SKD-BNN training steps of ResNet-20, VGG-Small and ResNet-18 give
bitwise the results recorded in tests/data/golden_steps.json: every loss part
of every step, the final parameters, BN running statistics and soft-label
bank. Any change of what the model computes in float32 (sign, IRConv2d,
teacher, losses, bank, classifier) shows here.

Float results depend on the CPU (vector unit and vendor) and the PyTorch
version, so they are recorded per platform; on a platform without a record
the comparison is skipped (say so in the reason); record it there with
``golden_steps.py --write`` only from code known to be right.
"""
import os.path as osp

import pytest

from golden_steps import (CONFIGS, golden_for, load_golden, platform_key,
                          run_steps)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

GOLDEN = load_golden()


@pytest.mark.parametrize('name', list(CONFIGS))
def test_five_steps_bitwise(name):
    recorded = golden_for(GOLDEN, platform_key())
    if recorded is None:
        pytest.skip('golden values were recorded on '
                    f'{[e["platform"] for e in GOLDEN["platforms"]]}, this is '
                    f'{platform_key()}')
    got = run_steps(ROOT, name)
    want = recorded[name]
    for step, (g, w) in enumerate(zip(got['steps'], want['steps'])):
        assert g == w, f'{name} step {step}: loss parts differ'
    assert len(got['steps']) == len(want['steps'])
    assert got['bank_counts'] == want['bank_counts']
    assert sum(want['bank_counts']) > 0  # the fold saw correct predictions
    for key in ('params', 'bn_stats', 'bank'):
        assert got[key] == want[key], f'{name}: final {key} differ'


def test_platform_records_differ_where_the_cpu_does():
    """Each record has its own platform, and the file holds one per CPU it
    was recorded on (e.g. the same vector unit on two vendors)."""
    keys = [e['platform'] for e in GOLDEN['platforms']]
    assert len(keys) == len({tuple(sorted(k.items())) for k in keys})
    assert all(set(k) == set(platform_key()) for k in keys)
