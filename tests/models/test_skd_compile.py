"""torch.compile of the SKD-BNN step: both passes and all losses trace into
one graph, traced once and reused (nothing on a module changes per step).
The 'eager' backend traces exactly as inductor would, in seconds."""
import copy

import pytest
import torch
from mmengine.optim import build_optim_wrapper

from skd_bnn_mm.engine.fast import compile_train_step
from tiny_skd_step import (SGD, epoch_end, random_batches, tiny_skd_model,
                           train_steps)


def test_skd_loss_is_one_graph_without_breaks():
    """Student pass, teacher pass and all losses trace into one graph: no
    hook registration or module attribute change inside the step (which
    would split it, or retrace it every step)."""
    from torch._dynamo import explain, reset
    model = tiny_skd_model()
    data = model.data_preprocessor(random_batches(1)[0], True)
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
    the same operators, so the losses and the trained state equal eager ones
    (BN running statistics included: the teacher pass must not update
    them)."""
    from torch._dynamo import reset
    from torch._dynamo.utils import counters
    reference = tiny_skd_model()
    eager = train_steps(reference, steps=5, epoch_end_after=2)
    reset()
    counters.clear()
    try:
        model = compile_train_step(tiny_skd_model(), dict(backend='eager'))
        optim_wrapper = build_optim_wrapper(model, copy.deepcopy(SGD))
        graphs, compiled = [], []
        for i, batch in enumerate(random_batches(5)):
            out = model.train_step(batch, optim_wrapper)
            compiled.append({k: float(v.detach()) for k, v in out.items()})
            graphs.append(counters['stats']['unique_graphs'])
            if i == 2:
                epoch_end(model)
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
