"""Teacher pass (value swap, BN statistics) and unit recorder on a tiny net."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from skd_bnn_mm.models.distill import SelfTeacher, UnitRecorder, flatten_records
from skd_bnn_mm.models.layers import IRConv2d


class Unit(nn.Module):
    """binary conv -> BN -> (+ shortcut) -> Hardtanh."""

    def __init__(self, cin, cout, stride=1, shortcut=True):
        super().__init__()
        self.conv = IRConv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.Hardtanh()
        self.shortcut = shortcut

    def forward(self, x):
        y = self.bn(self.conv(x))
        return self.act(y + x if self.shortcut else y)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(4)
        self.stem_act = nn.Hardtanh()
        self.unit1 = Unit(4, 4)
        self.unit2 = Unit(4, 6, stride=2, shortcut=False)

    def forward(self, x):
        x = self.stem_act(self.stem_bn(self.stem(x)))
        return (self.unit2(self.unit1(x)), )


def _net(seed=0):
    torch.manual_seed(seed)
    net = TinyNet().double().train()
    for m in net.modules():  # non-trivial affine params
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return net


def _sign(x):
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def _run(net, x, units=(r'unit\d\.act'), recorder=None, teacher=None):
    recorder = recorder or UnitRecorder(units)
    teacher = teacher or SelfTeacher()
    with recorder.record(net) as s_rec, teacher.student_pass(net):
        net(x)
    with torch.no_grad(), recorder.record(net) as t_rec, \
            teacher.teacher_pass(net):
        net(x)
    return flatten_records(s_rec), flatten_records(t_rec)


def _hooks(module):
    """``{module name: [forward hooks]}`` of the modules that have any."""
    return {name: list(m._forward_hooks.values())
            for name, m in module.named_modules() if m._forward_hooks}


def _idle(hook):
    return getattr(hook, 'outputs', None) is None and \
        getattr(hook, 'queue', None) is None


def test_value_swap_in_each_unit():
    net, x = _net(), torch.randn(5, 3, 8, 8, dtype=torch.float64)
    seen = {}

    def keep(name, phase):
        def hook(module, args, out):
            seen[(name, phase)] = (args[0].detach().clone(), out.detach())
        return hook

    recorder, teacher = UnitRecorder(r'unit\d\.act'), SelfTeacher()
    handles = [getattr(net, n).conv.register_forward_hook(keep(n, 'student'))
               for n in ('unit1', 'unit2')]
    with recorder.record(net), teacher.student_pass(net):
        net(x)
    for h in handles:
        h.remove()
    handles = [getattr(net, n).conv.register_forward_hook(keep(n, 'teacher'))
               for n in ('unit1', 'unit2')]
    with torch.no_grad(), recorder.record(net) as t_rec, \
            teacher.teacher_pass(net):
        net(x)
    for h in handles:
        h.remove()

    for name in ('unit1', 'unit2'):
        conv = getattr(net, name).conv
        _, y_student = seen[(name, 'student')]
        a_teacher, y_teacher = seen[(name, 'teacher')]
        # magnitude from the binary path, exactly
        assert torch.equal(y_teacher.abs(), y_student.abs())
        # sign from the real path: conv2d(a_teacher, Wb), real input
        with torch.no_grad():
            r = F.conv2d(a_teacher, conv.standardized_weight(), None,
                         conv.stride, conv.padding)
        nz = y_student != 0
        assert nz.float().mean() > 0.5
        assert torch.equal(_sign(y_teacher)[nz], _sign(r)[nz])
        # and the real path differs from the binary one somewhere
        assert not torch.equal(_sign(r)[nz], _sign(y_student)[nz])
    # the teacher's unit-1 output is unit 2's teacher input (units chain)
    t_units = flatten_records(t_rec)
    assert torch.equal(seen[('unit2', 'teacher')][0], t_units[0])
    assert not torch.equal(t_units[0], seen[('unit2', 'student')][0])


def test_teacher_units_match_manual_reference():
    net, x = _net(1), torch.randn(4, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        stem = net.stem_act(net.stem_bn(net.stem(x)))  # also updates stats
        ys1 = net.unit1.conv(stem)
        s1 = net.unit1.act(net.unit1.bn(ys1) + stem)
        ys2 = net.unit2.conv(s1)
    net2 = _net(1)  # same weights, fresh statistics
    s_units, t_units = _run(net2, x)
    torch.testing.assert_close(s_units[0], s1)

    def bn_batch(bn, y):
        return F.batch_norm(y, None, None, bn.weight, bn.bias, True, 0.0,
                            bn.eps)

    with torch.no_grad():
        u1 = net.unit1
        r1 = F.conv2d(stem, u1.conv.standardized_weight(), None, 1, 1)
        t1 = F.hardtanh(bn_batch(u1.bn, ys1.abs() * _sign(r1)) + stem)
        u2 = net.unit2
        r2 = F.conv2d(t1, u2.conv.standardized_weight(), None, 2, 1)
        ys2_on_student = ys2  # magnitudes of the student's unit-2 conv
        t2 = F.hardtanh(bn_batch(u2.bn, ys2_on_student.abs() * _sign(r2)))
    torch.testing.assert_close(t_units[0], t1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(t_units[1], t2, rtol=1e-12, atol=1e-12)
    assert not t_units[0].requires_grad and s_units[0].requires_grad


def _bn_state(net):
    return {k: v.clone() for k, v in net.state_dict().items()
            if 'running' in k or 'num_batches' in k}


def test_bn_running_stats_untouched_by_teacher_and_state_restored():
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    reference = _net(2)
    reference(x)  # one student forward only
    net = _net(2)
    _run(net, x)
    ref_state, state = _bn_state(reference), _bn_state(net)
    assert ref_state.keys() == state.keys() and len(state) == 9
    for k in state:
        assert torch.equal(state[k], ref_state[k]), k
    assert int(state['unit1.bn.num_batches_tracked']) == 1
    # everything switched back
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.track_running_stats
        if isinstance(m, IRConv2d):
            assert m.forward.mode is None
            assert m.forward.teacher.queue is None
            assert m.forward.teacher.wb is None


def test_hooks_are_registered_once_idle_between_steps_and_removable():
    """One recording hook per unit and one pass forward per binary conv,
    kept across steps (torch.compile traces a pass once only if nothing on
    the modules changes), idle outside the passes, removed by remove()."""
    net, x = _net(), torch.randn(3, 3, 8, 8, dtype=torch.float64)
    plain = net(x)
    recorder, teacher = UnitRecorder(r'unit\d\.act'), SelfTeacher()
    first = _run(net, x, recorder=recorder, teacher=teacher)
    hooks = _hooks(net)
    assert sorted(hooks) == ['unit1.act', 'unit2.act']
    assert all(len(h) == 1 and _idle(h[0]) for h in hooks.values())
    convs = [net.unit1.conv, net.unit2.conv]
    forwards = [c.__dict__['forward'] for c in convs]
    assert all(f.mode is None for f in forwards)
    second = _run(net, x, recorder=recorder, teacher=teacher)
    assert _hooks(net) == hooks  # the same hook objects, no new ones
    assert [c.__dict__['forward'] for c in convs] == forwards
    # the same input gives the same records (BN batch statistics in training
    # mode), so the idle hooks of step 1 did not add to step 2's records
    assert len(second[0]) == len(first[0]) == 2
    for a, b in zip(first[0] + first[1], second[0] + second[1]):
        torch.testing.assert_close(a, b)
    # a forward outside the passes records and caches nothing, and is the
    # plain forward (BN in training mode: batch statistics, same output)
    torch.testing.assert_close(net(x), plain, rtol=0, atol=0)
    assert all(_idle(h[0]) for h in _hooks(net).values())
    assert all(f.teacher.queue is None and f.slot == [None]
               for f in forwards)
    recorder.remove()
    teacher.remove()
    assert _hooks(net) == {}
    assert all('forward' not in c.__dict__ and
               'keep_standardized' not in c.__dict__ for c in convs)


def test_teacher_pass_restores_on_error_and_needs_student_pass():
    net, x = _net(), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    teacher = SelfTeacher()
    with pytest.raises(RuntimeError, match='student_pass'):
        with teacher.teacher_pass(net):
            pass
    with teacher.student_pass(net):
        net(x)
    with pytest.raises(RuntimeError, match='more often'):
        with torch.no_grad(), teacher.teacher_pass(net):
            net(x)
            net(x)  # one pass too many
    assert all(m.forward.mode is None for m in net.modules()
               if isinstance(m, IRConv2d))
    assert all(m.track_running_stats for m in net.modules()
               if isinstance(m, nn.BatchNorm2d))
    with teacher.student_pass(net):
        net(x)
    with pytest.raises(RuntimeError, match='fewer binary convs'):
        with torch.no_grad(), teacher.teacher_pass(net):
            net.unit1(net.stem_act(net.stem_bn(net.stem(x))))


def test_recorder_names_errors_and_shared_modules():
    net = _net()
    assert UnitRecorder(r'unit\d\.act').resolve(net) == ['unit1.act',
                                                          'unit2.act']
    assert UnitRecorder(['unit2.act', 'unit1.act']).resolve(net) == [
        'unit2.act', 'unit1.act']
    with pytest.raises(ValueError, match=r"unknown unit.*'unit3\.act'.*"
                       r'candidate names: .*unit1\.act'):
        UnitRecorder(['unit1.act', 'unit3.act']).resolve(net)
    with pytest.raises(ValueError, match=r'matches no module.*unit2\.conv'):
        UnitRecorder(r'layer\d+\.act').resolve(net)
    with pytest.raises(ValueError, match='unit_names'):
        UnitRecorder(None).resolve(net)
    with pytest.raises(TypeError, match='non-empty list'):
        UnitRecorder([])

    class Shared(nn.Module):  # one activation module used twice
        def __init__(self):
            super().__init__()
            self.act = nn.Hardtanh()

        def forward(self, x):
            return self.act(self.act(x * 3) * 2)

    m, x = Shared(), torch.linspace(-1, 1, 7)
    with UnitRecorder(['act']).record(m) as rec:
        m(x)
    outs = flatten_records(rec)
    assert len(outs) == 2
    torch.testing.assert_close(outs[0], F.hardtanh(x * 3))
    torch.testing.assert_close(outs[1], F.hardtanh(F.hardtanh(x * 3) * 2))
    m(x)  # outside the context: nothing recorded
    assert len(flatten_records(rec)) == 2


def test_zero_real_output_takes_the_positive_sign():
    """sign(0) = +1: a teacher conv whose real output is exactly 0 returns
    +|y|."""
    torch.manual_seed(0)
    conv = IRConv2d(3, 4, 3, 1, 1, bias=False)
    x = torch.randn(2, 3, 5, 5)
    teacher = SelfTeacher()
    with teacher.student_pass(conv):
        y = conv(x)
    with torch.no_grad(), teacher.teacher_pass(conv):
        out = conv(torch.zeros_like(x))  # r == 0 everywhere
    assert (y < 0).any()
    assert torch.equal(out, y.detach().abs())


def test_attach_restores_own_slot_and_reattaches_shallow_copies():
    net, x = _net(), torch.randn(3, 3, 8, 8, dtype=torch.float64)
    own = ['mine']  # a value the conv had before: not the teacher's
    net.unit1.conv.keep_standardized = own
    teacher = SelfTeacher()
    _run(net, x, teacher=teacher)
    assert net.unit1.conv.keep_standardized is not own
    # a shallow copy shares the conv's __dict__ entries, and with them the
    # pass forward of the original; a pass re-attaches the copy's own
    import copy
    clone = copy.copy(net.unit2.conv)
    assert clone.forward is net.unit2.conv.forward
    SelfTeacher().attach(clone)
    assert clone.forward is not net.unit2.conv.forward
    assert clone.forward.conv is clone
    teacher.remove()
    assert net.unit1.conv.keep_standardized is own
    assert 'forward' not in net.unit1.conv.__dict__
