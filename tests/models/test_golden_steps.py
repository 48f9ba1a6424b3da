"""Five SKD-BNN training steps of ResNet-20, VGG-Small and ResNet-18 give
bitwise the results recorded in tests/data/golden_steps.json: every loss part
of every step, the final parameters, BN running statistics and soft-label
bank. Any change of what the model computes in float32 (sign, IRConv2d,
teacher, losses, bank, classifier) shows here.

Float results depend on the CPU's vector unit and the PyTorch version, so on
another platform than the recorded one the comparison is skipped (say so in
the reason); regenerate there with ``golden_steps.py --write`` only from code
known to be right.
"""
import json
import os.path as osp

import pytest

from golden_steps import CONFIGS, GOLDEN, platform_key, run_steps

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

with open(GOLDEN) as f:
    EXPECTED = json.load(f)


@pytest.mark.parametrize('name', list(CONFIGS))
def test_five_steps_bitwise(name):
    if platform_key() != EXPECTED['platform']:
        pytest.skip(f'golden values were recorded on {EXPECTED["platform"]},'
                    f' this is {platform_key()}')
    got = run_steps(ROOT, name)
    want = EXPECTED['models'][name]
    for step, (g, w) in enumerate(zip(got['steps'], want['steps'])):
        assert g == w, f'{name} step {step}: loss parts differ'
    assert len(got['steps']) == len(want['steps'])
    assert got['bank_counts'] == want['bank_counts']
    assert sum(want['bank_counts']) > 0  # the fold saw correct predictions
    for key in ('params', 'bn_stats', 'bank'):
        assert got[key] == want[key], f'{name}: final {key} differ'
