"""Parameter, FLOP, BOP, OPs and memory counts against hand computations."""
import json
import os.path as osp
import sys

import pytest
import torch.nn as nn

from skd_bnn_mm.analysis import count_ops
from skd_bnn_mm.deploy import to_deploy
from skd_bnn_mm.models.layers import IRConv2d

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # tools/ is imported from the checkout
    sys.path.insert(0, ROOT)
from tools.analysis_tools import get_ops  # noqa: E402


def toy():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),      # FP, 8x8 out
        nn.BatchNorm2d(8),
        nn.Hardtanh(),
        IRConv2d(8, 16, 3, stride=2, padding=1, bias=False),  # 4x4 out
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10))


@pytest.mark.parametrize('deployed', [False, True])
def test_toy_counts(deployed):
    model = toy()
    if deployed:
        model = to_deploy(model)
    report = count_ops(model, (3, 8, 8))
    conv_fp = 8 * 8 * 8 * (3 * 3 * 3)
    conv_bin = 16 * 4 * 4 * (8 * 3 * 3)
    linear = 10 * 256
    assert report.flops == conv_fp + linear
    assert report.bops == conv_bin
    assert report.ops == conv_fp + linear + conv_bin / 64
    p_fp, p_bn, p_bin, p_fc = 3 * 8 * 9, 2 * 8, 8 * 16 * 9, 256 * 10 + 10
    assert report.params == p_fp + p_bn + p_bin + p_fc
    assert report.binary_params == p_bin
    assert report.memory_fp32_bytes == 4 * report.params
    assert report.memory_deployed_bytes == \
        (32 * (p_fp + p_bn + p_fc) + p_bin + 32 * 16) / 8
    kinds = {row.name: row.kind for row in report.layers}
    assert kinds == {'0': 'fp', '1': 'other', '3': 'binary', '5': 'fp'}


def test_shared_module_counts_every_call():
    conv = nn.Conv2d(4, 4, 1, bias=False)
    model = nn.Sequential(conv, conv)
    report = count_ops(model, (4, 5, 5))
    assert report.flops == 2 * (4 * 5 * 5 * 4)
    assert report.params == 16


def resnet18_in1k_bops():
    """16 binary 3x3 convs of the Bi-Real ResNet-18 at 224x224."""
    total = 0
    in_ch, size = 64, 56
    for out_ch, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        size //= stride
        total += size * size * out_ch * in_ch * 9  # first conv of the stage
        total += 3 * size * size * out_ch * out_ch * 9
        in_ch = out_ch
    return total


def test_get_ops_tool_paper_models(tmp_path, capsys):
    out = tmp_path / 'ops.json'
    get_ops.main([
        osp.join(ROOT, 'configs/irnet/irnet_resnet20_1xb128_cifar10.py'),
        osp.join(ROOT, 'configs/irnet/irnet_resnet18_8xb32_in1k.py'),
        '--json', str(out)])
    printed = capsys.readouterr().out
    assert '| irnet_resnet18_8xb32_in1k | 3x224x224 |' in printed
    models = json.loads(out.read_text())['models']
    r20, r18 = (m['totals'] for m in models)
    assert models[0]['input_shape'] == [3, 32, 32]
    assert models[1]['input_shape'] == [3, 224, 224]

    # ResNet-20: FP = stem 3x3 conv + FC; binary = 18 3x3 convs
    assert r20['flops'] == 32 * 32 * 16 * 27 + 64 * 10
    assert r20['bops'] == (
        6 * 32 * 32 * 16 * 16 * 9                                 # layer1
        + 16 * 16 * 32 * 16 * 9 + 5 * 16 * 16 * 32 * 32 * 9      # layer2
        + 8 * 8 * 64 * 32 * 9 + 5 * 8 * 8 * 64 * 64 * 9)         # layer3

    # ImageNet ResNet-18: FP = 7x7 stem + three 1x1 downsample convs + FC
    flops = 112 * 112 * 64 * 3 * 49 + 3 * (28 * 28 * 128 * 64) + 512 * 1000
    assert r18['flops'] == flops
    assert r18['bops'] == resnet18_in1k_bops()
    # the published figures of Bi-Real Net / IR-Net ResNet-18
    assert r18['bops'] == pytest.approx(1.68e9, rel=0.01)
    assert r18['ops'] == pytest.approx(1.63e8, rel=0.01)
    assert r18['flops'] == pytest.approx(1.37e8, rel=0.01)
    # 1-bit weights: about 11x less memory (the FC and FP convs remain)
    assert 10 < r18['memory_fp32_bytes'] / r18['memory_deployed_bytes'] < 12
