"""OpenVINO export: BinaryConvolution layers equal IRConv2d exactly, whole
networks equal PyTorch within float rounding, the float export too."""
import json

import numpy as np
import pytest
import torch

from skd_bnn_mm.deploy import (ACTIVATION_THRESHOLD, export_openvino,
                               read_metadata, run_openvino, to_deploy,
                               verify_openvino)
from skd_bnn_mm.models.layers import IRConv2d

from deploy_helpers import PAPER_CONFIGS, paper_model  # noqa: F401

ov = pytest.importorskip('openvino')


def ops_of(path):
    return ov.Core().read_model(path).get_ordered_ops()


def count(path, kind):
    return sum(op.get_type_name() == kind for op in ops_of(path))


def tricky_input(shape, seed):
    """Random input in which a third of the values are exactly 0, -0.0 or
    the smallest float32 denormals of either sign."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen)
    den = float(np.nextafter(np.float32(0), np.float32(1)))
    special = torch.tensor([0.0, -0.0, den, -den, 1e-40, -1e-40])
    pick = torch.randint(0, len(special), shape, generator=gen)
    mask = torch.rand(*shape, generator=gen) < 0.35
    return torch.where(mask, special[pick], x)


@pytest.mark.parametrize('in_ch,out_ch,stride,padding,bias', [
    (16, 16, 1, 1, False),
    (16, 32, 2, 1, False),   # stride 2 with zero padding
    (32, 8, 1, 0, True),     # no padding; a full-precision bias
    (8, 16, 2, 0, False),
])
def test_binary_layer_equals_irconv2d_exactly(in_ch, out_ch, stride, padding,
                                              bias, tmp_path):
    torch.manual_seed(in_ch + out_ch + stride)
    conv = IRConv2d(in_ch, out_ch, 3, stride, padding, bias=bias).eval()
    shape = (3, in_ch, 9, 9)
    x = tricky_input(shape, seed=out_ch)
    with torch.no_grad():
        ref = conv(x)
    path = str(tmp_path / 'conv.xml')
    meta = export_openvino(conv, path, shape[1:], batch=shape[0])
    assert json.loads(meta['binary_convs']) == ['']  # the model itself
    assert count(path, 'BinaryConvolution') == 1
    assert count(path, 'Convolution') == 0
    (weights, ) = [op for op in ops_of(path) if op.get_type_name() ==
                   'Constant' and op.get_element_type() == ov.Type.u1]
    assert list(weights.get_shape()) == [out_ch, in_ch, 3, 3]
    (fq, ) = [op for op in ops_of(path)
              if op.get_type_name() == 'FakeQuantize']
    assert fq.get_levels() == 2

    out = torch.from_numpy(run_openvino(path, x))
    with torch.no_grad():
        qw = conv.binary_weight()
        sums = torch.nn.functional.conv2d(torch.where(x >= 0, 1.0, -1.0),
                                          qw, None, stride, padding)
        scale = qw.abs().amax(dim=(1, 2, 3)).view(-1, 1, 1)
        b = conv.bias.view(-1, 1, 1) if bias else 0.0
        # exact: an integer sum of +-1 times a power of two per channel
        # (plus the bias, added once)
        assert torch.equal(out, sums + b)
        assert torch.equal(sums / scale, (sums / scale).round())
    if bias:
        # PyTorch's conv starts its sum from the bias: other rounding
        assert torch.allclose(out, ref, rtol=1e-6, atol=1e-6)
    else:
        assert torch.equal(out, ref)
    # the input's zeros matter: mapping them to -1 gives other sums
    with torch.no_grad():
        wrong = torch.nn.functional.conv2d(
            torch.where(x > 0, 1.0, -1.0), conv.binary_weight(), conv.bias,
            stride, padding)
    assert not torch.equal(wrong, ref)


def test_threshold_is_sign_of_training():
    # the FakeQuantize maps x > t to +1: t must separate -den and 0
    t = np.float32(ACTIVATION_THRESHOLD)
    den = np.nextafter(np.float32(0), np.float32(1))
    assert t == -den and np.float32(0) > t and -den <= t


def test_channels_not_multiple_of_8_stay_float(tmp_path):
    # the CPU plugin's binary kernel is wrong for such convs: exact float
    # conv on the +-1 map instead
    torch.manual_seed(1)
    conv = IRConv2d(12, 8, 3, 1, 1, bias=False).eval()
    x = tricky_input((2, 12, 6, 6), seed=3)
    path = str(tmp_path / 'conv12.xml')
    meta = export_openvino(conv, path, (12, 6, 6), batch=2)
    assert json.loads(meta['binary_convs']) == []
    assert json.loads(meta['float_sign_convs']) == ['']
    assert count(path, 'BinaryConvolution') == 0
    with torch.no_grad():
        assert np.array_equal(run_openvino(path, x), conv(x).numpy())


@pytest.mark.parametrize('name', list(PAPER_CONFIGS))
def test_paper_networks_binary_and_float(name, paper_model, tmp_path):
    model, _, size = paper_model(name)
    num_binary = sum(isinstance(m, IRConv2d) for m in model.modules())
    x = torch.randn(8, 3, size, size,
                    generator=torch.Generator().manual_seed(5))
    x[0, :, :5, :5] = 0  # zero pixels
    with torch.no_grad():
        ref = model(x, mode='tensor').numpy()
    tol = 1e-4 * max(1.0, float(np.abs(ref).max()))
    deployed = to_deploy(model)  # frozen once for both exports
    for binary in (True, False):
        path = str(tmp_path / f'{name}_{binary}.xml')
        meta = export_openvino(deployed, path, (3, size, size), batch=8,
                               binary=binary)
        assert count(path, 'BinaryConvolution') == (num_binary
                                                    if binary else 0)
        assert len(json.loads(meta['binary_convs'])) == (num_binary
                                                         if binary else 0)
        out = run_openvino(path, x)
        assert np.abs(out - ref).max() < tol, (binary, np.abs(out - ref)
                                               .max())
        assert np.array_equal(out.argmax(1), ref.argmax(1))
    assert read_metadata(path)['binary'] == 'false'
    assert json.loads(read_metadata(path)['mean'])[0] == pytest.approx(
        json.loads(meta['mean'])[0])


def test_verify_and_dynamic_batch(paper_model, tmp_path):
    model, _, size = paper_model('resnet20_cifar')
    path = str(tmp_path / 'dyn.xml')
    export_openvino(model, path, (3, size, size), batch=None)
    shape = ov.Core().read_model(path).input(0).get_partial_shape()
    assert shape[0].is_dynamic
    # compiled for each batch size it is given
    for n in (1, 3):
        x = torch.randn(n, 3, size, size)
        assert verify_openvino(path, model, x) < 1e-4
