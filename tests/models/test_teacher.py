"""Teacher twin (value swap, BN statistics, shared parameters) and output
recorder on a tiny net."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from skd_bnn_mm.models.distill import (OutputRecorder, SelfTeacher,
                                      ValueSwapConv, flatten_records,
                                      resolve_units)
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


def _parts(net, units=r'unit\d\.act'):
    names = resolve_units(net, units)
    teacher = SelfTeacher(net)
    return names, teacher, OutputRecorder(net, names + teacher.conv_names)


def _run(net, x, units=r'unit\d\.act', parts=None):
    """Student pass, then teacher pass: the units of each."""
    names, teacher, recorder = parts or _parts(net, units)
    with recorder.record() as student:
        net(x)
    with torch.no_grad(), recorder.record() as taught:
        teacher(x, student)
    return flatten_records(student, names), flatten_records(taught, names)


def test_value_swap_in_each_unit():
    net, x = _net(), torch.randn(5, 3, 8, 8, dtype=torch.float64)
    names, teacher, recorder = _parts(net)
    seen = []  # (input, output) of every call of a binary conv
    for conv in (net.unit1.conv, net.unit2.conv):
        # a hook of the student's conv runs in the teacher's twin too
        conv.register_forward_hook(lambda m, args, out: seen.append(
            (args[0].detach().clone(), out.detach())))
    with recorder.record() as student:
        net(x)
    with torch.no_grad(), recorder.record() as taught:
        teacher(x, student)
    assert len(seen) == 4
    for i, name in enumerate(('unit1', 'unit2')):
        conv = getattr(net, name).conv
        _, y_student = seen[i]
        a_teacher, y_teacher = seen[2 + i]
        assert torch.equal(student[f'{name}.conv'][0].detach(), y_student)
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
    t_units = flatten_records(taught, names)
    assert torch.equal(seen[3][0], t_units[0])
    assert not torch.equal(t_units[0], seen[1][0])


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


def _module_state(net):
    """Every module's own attributes, by identity: what a pass could patch."""
    return [(m, dict(vars(m)), {k: dict(v) for k, v in vars(m).items()
                                if isinstance(v, dict)})
            for m in net.modules()]


def test_bn_running_stats_untouched_by_teacher_and_student_unmodified():
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    reference = _net(2)
    reference(x)  # one student forward only
    net = _net(2)
    parts = _parts(net)
    before = _module_state(net)
    _run(net, x, parts=parts)
    ref_state, state = _bn_state(reference), _bn_state(net)
    assert ref_state.keys() == state.keys() and len(state) == 9
    for k in state:
        assert torch.equal(state[k], ref_state[k]), k
    assert int(state['unit1.bn.num_batches_tracked']) == 1
    # no module of the student got or lost an attribute, a parameter, a
    # buffer or a hook, and none has an instance forward
    after = _module_state(net)
    for (m, attrs, dicts), (m2, attrs2, dicts2) in zip(before, after):
        assert m is m2 and attrs.keys() == attrs2.keys()
        assert all(attrs[k] is attrs2[k] for k in attrs
                   if k not in ('_buffers', '_parameters')), type(m)
        assert {k: {n: id(t) for n, t in d.items()}
                for k, d in dicts.items()} == {
            k: {n: id(t) for n, t in d.items()} for k, d in dicts2.items()}
        assert 'forward' not in attrs
        assert m.__class__ in (TinyNet, Unit, nn.Conv2d, nn.BatchNorm2d,
                               nn.Hardtanh, IRConv2d)


def test_twin_shares_parameters_and_is_in_no_state_dict():
    net = _net()
    teacher = SelfTeacher(net)
    twin = teacher.twin
    assert [n for n, m in twin.named_modules()
            if isinstance(m, ValueSwapConv)] == teacher.conv_names == [
        'unit1.conv', 'unit2.conv']
    assert dict(twin.named_parameters()).keys() == \
        dict(net.named_parameters()).keys()
    for (name, p), q in zip(net.named_parameters(), twin.parameters()):
        assert p is q, name
    # leaves that need no change are the student's modules themselves;
    # BatchNorms hold no running statistics
    assert twin.stem is net.stem and twin.unit1.act is net.unit1.act
    assert twin.unit1 is not net.unit1
    assert twin.unit1.bn.running_mean is None
    assert not twin.unit1.bn.track_running_stats
    assert net.unit1.bn.running_mean is not None
    # a loaded state and a dtype change reach the twin (shared objects)
    state = {k: v + 1 if v.is_floating_point() else v
             for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    assert torch.equal(twin.unit1.conv.weight, state['unit1.conv.weight'])
    net.float()
    assert twin.unit2.conv.weight.dtype == torch.float32
    # a copy of the owner copies the twin onto the copied parameters
    holder = nn.Module()
    holder.net, holder.teacher = net, teacher
    clone = copy.deepcopy(holder)
    assert clone.teacher.twin.unit1.conv.weight is clone.net.unit1.conv.weight
    assert clone.teacher.mirrors(clone.net)
    assert not clone.teacher.mirrors(net)


def test_mirrors_turns_false_when_a_module_is_replaced():
    net = _net()
    teacher = SelfTeacher(net)
    assert teacher.mirrors(net)
    net.unit1.bn = nn.BatchNorm2d(4).double()  # as SyncBN conversion does
    assert not teacher.mirrors(net)
    assert SelfTeacher(net).twin.unit1.bn is not net.unit1.bn


def test_teacher_errors_and_needs_a_binary_conv():
    net, x = _net(), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    names, teacher, recorder = _parts(net)
    with recorder.record() as student:
        net(x)
    with pytest.raises(RuntimeError, match='more often'):
        with torch.no_grad():
            teacher(x, {n: [] for n in teacher.conv_names})
    with recorder.record() as student:
        net(x)
        net(x)  # two student passes, one teacher pass
    with pytest.raises(RuntimeError, match='fewer binary convs'):
        with torch.no_grad():
            teacher(x, student)
    assert teacher._feed.queues is None  # nothing kept after an error
    with pytest.raises(ValueError, match='needs binary convs'):
        SelfTeacher(nn.Sequential(nn.Conv2d(3, 3, 3), nn.ReLU()))


def test_recorder_names_errors_and_shared_modules():
    net = _net()
    assert resolve_units(net, r'unit\d\.act') == ['unit1.act', 'unit2.act']
    assert resolve_units(net, ['unit2.act', 'unit1.act']) == [
        'unit2.act', 'unit1.act']
    with pytest.raises(ValueError, match=r"unknown unit.*'unit3\.act'.*"
                       r'candidate names: .*unit1\.act'):
        resolve_units(net, ['unit1.act', 'unit3.act'])
    with pytest.raises(ValueError, match=r'matches no module.*unit2\.conv'):
        resolve_units(net, r'layer\d+\.act')
    with pytest.raises(ValueError, match='unit_names'):
        resolve_units(net, None)
    with pytest.raises(TypeError, match='non-empty list'):
        resolve_units(net, [])
    with pytest.raises(ValueError, match='twice'):
        resolve_units(net, ['unit1.act', 'unit1.act'])

    class Shared(nn.Module):  # one activation module used twice
        def __init__(self):
            super().__init__()
            self.act = nn.Hardtanh()

        def forward(self, x):
            return self.act(self.act(x * 3) * 2)

    m, x = Shared(), torch.linspace(-1, 1, 7)
    recorder = OutputRecorder(m, ['act'])
    with recorder.record() as rec:
        m(x)
    outs = flatten_records(rec)
    assert len(outs) == 2
    torch.testing.assert_close(outs[0], F.hardtanh(x * 3))
    torch.testing.assert_close(outs[1], F.hardtanh(F.hardtanh(x * 3) * 2))
    m(x)  # outside the context: nothing recorded
    assert len(flatten_records(rec)) == 2
    with recorder.record() as rec2:  # a new context starts empty
        pass
    assert rec2 == {'act': []}
    assert len(m.act._forward_hooks) == 1
    recorder.attach(m)  # re-attaching replaces the hook, adds none
    assert len(m.act._forward_hooks) == 1
    recorder.remove()
    assert not m.act._forward_hooks


def test_zero_real_output_takes_the_positive_sign():
    """sign(0) = +1: a teacher conv whose real output is exactly 0 returns
    +|y|, also where y is -0.0 (copysign alone would keep that sign)."""
    torch.manual_seed(0)
    conv = IRConv2d(3, 4, 3, 1, 1, bias=False)
    x = torch.randn(2, 3, 5, 5)
    teacher = SelfTeacher(conv)
    with torch.no_grad():
        y = conv(x)
        y[0, 0, 0, 0] = -0.0
        out = teacher(torch.zeros_like(x), {'': [y]})  # r == 0 everywhere
    assert (y < 0).any()
    assert torch.equal(out, y.abs())
    assert not torch.signbit(out).any()
