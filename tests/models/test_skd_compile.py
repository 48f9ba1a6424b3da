"""torch.compile of the SKD-BNN step: both passes and all losses trace into
one graph, traced once and reused (nothing on a module changes per step).
The 'eager' backend traces exactly as inductor would, in seconds."""
import copy

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from skd_bnn_mm.engine.fast import compile_train_step

#: SKD-BNN ResNet-20 shrunk for the CPU: 4/8/16 channels, 8x8 images
TINY_SKD = dict(
    type='SKDImageClassifier',
    data_preprocessor=dict(num_classes=10, mean=[125.3, 123.0, 113.9],
                           std=[63.0, 62.1, 66.7], to_rgb=False),
    backbone=dict(type='BNNResNet20CIFAR', stem_channels=4),
    neck=dict(type='PoolBNNeck', in_channels=16, pool='avg', norm=True),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=16,
              loss=dict(type='CrossEntropyLoss')),
    distill=dict(units=r'layer\d+\.\d+\.act\d'))
SGD = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9,
                          weight_decay=1e-4))


def _model():
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(TINY_SKD))
    model.init_weights()
    return model.train()


def _batches(n=3, bs=8, hw=8):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        images = torch.randint(0, 256, (bs, 3, hw, hw), generator=g,
                               dtype=torch.uint8)
        labels = torch.randint(0, 10, (bs, ), generator=g)
        out.append(dict(inputs=list(images.unbind(0)), data_samples=[
            DataSample().set_gt_label(int(y)) for y in labels]))
    return out


def _epoch_end(model):
    """What the Runner does between epochs: the bank update, validation
    (eval mode) and train() again."""
    model.soft_label_bank.update(epoch=0)
    model.eval()
    model.train()


def _train(model, steps, epoch_end_after=None):
    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(SGD))
    out = []
    for i, batch in enumerate(_batches(steps)):
        out.append({k: float(v.detach()) for k, v in model.train_step(
            batch, optim_wrapper).items()})
        if i == epoch_end_after:
            _epoch_end(model)
    return out


def test_skd_loss_is_one_graph_without_breaks():
    """Student pass, teacher pass and all losses trace into one graph: no
    hook registration or module attribute change inside the step (which
    would split it, or retrace it every step)."""
    from torch._dynamo import explain, reset
    model = _model()
    data = model.data_preprocessor(_batches(1)[0], True)
    reset()
    try:
        report = explain(model.loss)(data['inputs'], data['data_samples'])
    finally:
        reset()
    assert report.graph_break_count == 0, report.break_reasons
    assert report.graph_count == 1


def test_compiled_skd_step_is_traced_once_and_matches_eager():
    """torch.compile guards on the modules it ran: the twin and the recorder
    must not change between steps, or the backbone is retraced every
    step (and falls back to eager at the cache limit); an epoch end (bank
    update, eval(), train()) in between retraces nothing either. The
    'eager' backend traces exactly as inductor would, in seconds, and runs
    the same operators, so the losses and the trained state equal eager ones (BN
    running statistics included: the teacher pass must not update them)."""
    from torch._dynamo import reset
    from torch._dynamo.utils import counters
    reference = _model()
    eager = _train(reference, steps=5, epoch_end_after=2)
    reset()
    counters.clear()
    try:
        model = compile_train_step(_model(), dict(backend='eager'))
        optim_wrapper = build_optim_wrapper(model, copy.deepcopy(SGD))
        graphs, compiled = [], []
        for i, batch in enumerate(_batches(5)):
            out = model.train_step(batch, optim_wrapper)
            compiled.append({k: float(v.detach()) for k, v in out.items()})
            graphs.append(counters['stats']['unique_graphs'])
            if i == 2:
                _epoch_end(model)
    finally:
        reset()
    # step 1 traces the SKD loss, step 2 the optimizer with its momentum
    # state; nothing is traced again after that (a retrace adds a graph)
    assert graphs[1] == graphs[2] == graphs[3] == graphs[4], graphs
    assert graphs[0] > 0
    assert eager[4]['loss_label'] > 0  # the bank is on after the epoch end
    for a, b in zip(eager, compiled):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), key
    state = model.state_dict()
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-7,
                                   msg=key)
    assert int(state['backbone.stem_bn.num_batches_tracked']) == 5

