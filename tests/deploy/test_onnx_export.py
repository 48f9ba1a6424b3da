"""ONNX export: onnxruntime matches PyTorch, binary convs are Sign + ±2**e."""
import numpy as np
import pytest
import torch

from skd_bnn_mm.deploy import export_onnx, verify_onnx
from skd_bnn_mm.models.layers import IRConv2d

from deploy_helpers import paper_model  # noqa: F401

onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')


@pytest.mark.parametrize('name', ['resnet20_cifar', 'vgg-small_cifar'])
def test_onnxruntime_matches_pytorch(name, paper_model, tmp_path):
    model, _, size = paper_model(name)
    path = str(tmp_path / f'{name}.onnx')
    export_onnx(model, path, (3, size, size))
    # batch 3 while the export ran with batch 1: the batch axis is dynamic
    x = torch.randn(3, 3, size, size, generator=torch.Generator()
                    .manual_seed(2))
    x[0, :, :4, :4] = 0  # zero pixels: the sign must give +1 in both
    assert verify_onnx(path, model, x) < 1e-4
    # BN statistics are random, so no output is an exact tie and the
    # runtime's Conv+BN fusion changes nothing beyond rounding
    assert verify_onnx(path, model, x, optimize=True) < 1e-4

    proto = onnx.load(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta['binary_sign'] == 'Where(GreaterOrEqual(x, 0), 1, -1)'
    assert 'mean' in meta and 'std' in meta
    nodes = proto.graph.node
    # constants: initializers and Constant nodes
    inits = {i.name: onnx.numpy_helper.to_array(i)
             for i in proto.graph.initializer}
    inits.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
                  for n in nodes if n.op_type == 'Constant'})
    producer = {o: n for n in nodes for o in n.output}
    binary = [n for n in nodes if n.op_type == 'Conv'
              and n.input[0] in producer
              and producer[n.input[0]].op_type == 'Where']
    num_binary = sum(isinstance(m, IRConv2d) for m in model.modules())
    assert len(binary) == num_binary
    for conv in binary:
        where = producer[conv.input[0]]
        assert producer[where.input[0]].op_type == 'GreaterOrEqual'
        w = inits[conv.input[1]].reshape(
            inits[conv.input[1]].shape[0], -1).astype(np.float64)
        mags = np.abs(w)
        # one magnitude per output channel, a power of two
        assert np.all(mags == mags[:, :1])
        exps = np.log2(mags[:, 0])
        assert np.all(exps == np.round(exps))

