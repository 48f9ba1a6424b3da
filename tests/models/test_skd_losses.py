"""SKD-BNN losses against hand computations on small tensors."""
import math

import pytest
import torch
import torch.nn.functional as F

from skd_bnn_mm.models.losses import (ChannelSpatialDistillLoss,
                                      LabelClusterLoss, SoftLabelKLLoss)


def _unit_loss_by_hand(s, t):
    """``L_unit`` with explicit loops over samples (no vectorisation)."""
    b, c, h, w = s.shape
    sq_v = sq_u = 0.0
    for i in range(b):
        vs = [float(s[i, k].mean()) for k in range(c)]
        vt = [float(t[i, k].mean()) for k in range(c)]
        us = [float(s[i, :, y, x].mean()) for y in range(h) for x in range(w)]
        ut = [float(t[i, :, y, x].mean()) for y in range(h) for x in range(w)]
        nvs, nvt = math.sqrt(sum(a * a for a in vs)), math.sqrt(
            sum(a * a for a in vt))
        nus, nut = math.sqrt(sum(a * a for a in us)), math.sqrt(
            sum(a * a for a in ut))
        sq_v += sum((a / nvs - z / nvt)**2 for a, z in zip(vs, vt))
        sq_u += sum((a / nus - z / nut)**2 for a, z in zip(us, ut))
    return (math.sqrt(sq_v) / c + math.sqrt(sq_u) / (h * w)) / b


def _units(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4, 5, 5), (3, 4, 5, 5), (3, 6, 2, 3)]  # two groups
    student = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    teacher = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    return student, teacher


def test_channel_spatial_value_matches_hand_computation():
    student, teacher = _units()
    expected = sum(_unit_loss_by_hand(s, t)
                   for s, t in zip(student, teacher)) / 3
    loss = ChannelSpatialDistillLoss(loss_weight=1.0)(student, teacher)
    assert float(loss) == pytest.approx(expected, rel=1e-10)
    loss2 = ChannelSpatialDistillLoss(loss_weight=2.5)(student, teacher)
    assert float(loss2) == pytest.approx(2.5 * expected, rel=1e-10)


def _grad_by_formula(s, t, detach_norm):
    """dL_unit/dS from the chain rule, with the student norm constant (or
    not, for the control)."""
    b, c, h, w = s.shape
    vs, vt = s.mean(dim=(2, 3)), t.mean(dim=(2, 3))
    us, ut = s.mean(dim=1).flatten(1), t.mean(dim=1).flatten(1)

    def d_rows(x, y, scale):
        n = x.norm(dim=1, keepdim=True)
        d = x / n - y / y.norm(dim=1, keepdim=True)
        g = d / (d.norm() * scale * b)  # dL/d(x/n)
        if detach_norm:
            return g / n
        # d(x/n)/dx = (I - x x^T / n^2) / n
        return (g - (g * x).sum(1, keepdim=True) * x / n**2) / n

    g_v = d_rows(vs, vt, c)  # [B, C]
    g_u = d_rows(us, ut, h * w).view(b, 1, h, w)  # [B, 1, H, W]
    return g_v[:, :, None, None] / (h * w) + g_u / c


def test_channel_spatial_gradient_has_detached_student_norm():
    student, teacher = _units(1)
    student = [s.requires_grad_() for s in student]
    loss = ChannelSpatialDistillLoss()(student, teacher)
    loss.backward()
    for s, t in zip(student, teacher):
        expected = _grad_by_formula(s.detach(), t, detach_norm=True) / 3
        torch.testing.assert_close(s.grad, expected, rtol=1e-9, atol=1e-12)
        # control: with the norm inside the graph the gradient differs
        other = _grad_by_formula(s.detach(), t, detach_norm=False) / 3
        assert (s.grad - other).abs().max() > 1e-3 * other.abs().max()


def test_channel_spatial_teacher_gets_no_gradient_and_shapes_checked():
    student, teacher = _units(2)
    student = [s.requires_grad_() for s in student]
    teacher = [t.requires_grad_() for t in teacher]
    ChannelSpatialDistillLoss()(student, teacher).backward()
    assert all(t.grad is None for t in teacher)
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    with pytest.raises(ValueError, match='same non-zero number'):
        ChannelSpatialDistillLoss()(student, teacher[:2])
    with pytest.raises(ValueError, match=r'unit 0 must be \[B, C, H, W\]'):
        ChannelSpatialDistillLoss()([torch.ones(2, 3)], [torch.ones(2, 3)])


def test_soft_label_kl_matches_hand_computation():
    logits = torch.tensor([[1.0, 2.0, -1.0], [0.5, 0.0, 3.0]],
                          dtype=torch.float64)
    target = torch.tensor([[4.0, 0.0, 1.0], [-2.0, 1.0, 2.0]],
                          dtype=torch.float64)
    t, beta = 4.0, 0.05

    def softmax(row):
        e = [math.exp(v / t) for v in row]
        return [v / sum(e) for v in e]

    kl = 0.0
    for z, q in zip(logits.tolist(), target.tolist()):
        p_s, p_t = softmax(z), softmax(q)
        kl += sum(a * (math.log(a) - math.log(b)) for a, b in zip(p_t, p_s))
    expected = beta * t * t * kl / 2
    loss = SoftLabelKLLoss(loss_weight=beta, temperature=t)(logits, target)
    assert float(loss) == pytest.approx(expected, rel=1e-12)
    # identical distributions: zero
    assert float(SoftLabelKLLoss()(target, target)) == pytest.approx(0,
                                                                    abs=1e-15)


def test_label_cluster_matches_hand_computation_and_detaches_centres():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(6, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([2, 0, 2, 2, 5, 0])
    gamma = 0.01

    centres = {}
    for y in set(labels.tolist()):
        rows = [feats[i] for i in range(6) if labels[i] == y]
        centres[y] = sum(rows) / len(rows)
    terms = []
    for i in range(6):
        c = centres[int(labels[i])]
        cos = float(feats[i] @ c / (feats[i].norm() * c.norm()))
        terms.append((1 - cos) / 2)
    expected = gamma * sum(terms) / 6

    x = feats.clone().requires_grad_()
    loss = LabelClusterLoss(loss_weight=gamma)(x, labels, num_classes=7)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-12)
    loss.backward()
    # gradient with constant centres: d/dP_i of -gamma/(2B) cos(P_i, c)
    expected_grad = torch.empty_like(feats)
    for i in range(6):
        p, c = feats[i], centres[int(labels[i])]
        pn, cn = p.norm(), c.norm()
        dcos = c / (pn * cn) - (p @ c) * p / (pn**3 * cn)
        expected_grad[i] = -gamma / (2 * 6) * dcos
    torch.testing.assert_close(x.grad, expected_grad, rtol=1e-9, atol=1e-14)
    # num_classes read from the labels gives the same value
    same = LabelClusterLoss(loss_weight=gamma)(feats, labels)
    assert float(same) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize('cls,kwargs,match', [
    (ChannelSpatialDistillLoss, dict(loss_weight=-1), 'loss_weight'),
    (LabelClusterLoss, dict(loss_weight=float('nan')), 'loss_weight'),
    (SoftLabelKLLoss, dict(loss_weight=-0.1), 'loss_weight'),
    (SoftLabelKLLoss, dict(temperature=0), 'temperature'),
    (SoftLabelKLLoss, dict(temperature=-4), 'temperature'),
    (SoftLabelKLLoss, dict(temperature='hot'), 'temperature'),
])
def test_invalid_arguments_raise_value_error(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_losses_are_registered():
    from mmpretrain.registry import MODELS
    loss = MODELS.build(dict(type='SoftLabelKLLoss', loss_weight=0.1,
                             temperature=2.0))
    assert isinstance(loss, SoftLabelKLLoss) and loss.temperature == 2.0
    assert isinstance(MODELS.build(dict(type='ChannelSpatialDistillLoss')),
                      ChannelSpatialDistillLoss)
    assert isinstance(MODELS.build(dict(type='LabelClusterLoss')),
                      LabelClusterLoss)


def test_label_losses_run_in_float32_for_bf16_inputs():
    """Under autocast the head gives bf16 logits/features: the losses must
    equal the float32 computation on the same (bf16-rounded) values."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 10, generator=g).bfloat16().requires_grad_()
    target = torch.randn(16, 10, generator=g)
    feats = torch.randn(16, 32, generator=g).bfloat16().requires_grad_()
    labels = torch.randint(0, 10, (16, ), generator=g)
    kl, cluster = SoftLabelKLLoss(), LabelClusterLoss()
    for loss, args, ref_args in (
            (kl, (logits, target), (logits.detach().float(), target)),
            (cluster, (feats, labels, 10),
             (feats.detach().float(), labels, 10))):
        got = loss(*args)
        assert got.dtype == torch.float32
        ref = loss(*ref_args)
        assert got.item() == pytest.approx(ref.item(), rel=1e-6)
        got.backward()
    # gradients reach the bf16 tensors, in their dtype
    assert logits.grad.dtype == feats.grad.dtype == torch.bfloat16
    assert logits.grad.abs().sum() > 0 and feats.grad.abs().sum() > 0


def test_distill_loss_reduces_bf16_features_in_float32():
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(4, 8, 6, 6, generator=g).to(torch.bfloat16)
               .requires_grad_() for _ in range(3)]
    teacher = [(s.detach().float() + 0.05 * torch.randn(
        s.shape, generator=g)).to(torch.bfloat16) for s in student]
    loss = ChannelSpatialDistillLoss()(student, teacher)
    assert loss.dtype == torch.float32
    exact = ChannelSpatialDistillLoss()([s.detach().double() for s in student],
                                        [t.double() for t in teacher])
    assert float(loss) == pytest.approx(float(exact), rel=1e-5)
    loss.backward()
    assert student[0].grad.dtype == torch.bfloat16


def _naive_fp16_feat_loss(student, teacher):
    """The feature loss with every operation in fp16 (what autocast would
    give without the float32 reductions)."""
    total = 0
    for s, t in zip(student, teacher):
        b, c, h, w = s.shape

        def rows(x, dims):
            v = x.mean(dim=dims).reshape(b, -1)
            return v / torch.linalg.vector_norm(v, dim=1, keepdim=True)

        dv = rows(s, (2, 3)) - rows(t, (2, 3))
        du = rows(s, 1) - rows(t, 1)
        total = total + (torch.linalg.vector_norm(dv.flatten()) / c
                         + torch.linalg.vector_norm(du.flatten()) / (h * w)
                         ) / b
    return total / len(student)


def test_losses_of_fp16_inputs_equal_float32_on_the_same_values():
    """fp16 autocast: features, logits and penultimate features arrive in
    fp16. Each loss equals its float32 computation on the same fp16 values;
    computed in fp16 the feature and KL losses lose most of their digits
    (student and teacher are close, their difference cancels), and the
    cluster loss ``1 - cos`` of near-centre features is mostly rounding."""
    g = torch.Generator().manual_seed(0)
    base = [torch.randn(8, 16, 8, 8, generator=g) + 2.0 for _ in range(2)]
    student = [(b + 0.01 * torch.randn(b.shape, generator=g)).half()
               for b in base]
    teacher = [b.half() for b in base]
    logits = torch.randn(16, 10, generator=g) * 3
    target = logits + 0.05 * torch.randn(16, 10, generator=g)
    feats = torch.randn(1, 32, generator=g) + 0.02 * torch.randn(
        16, 32, generator=g)
    labels = torch.zeros(16, dtype=torch.long)
    cases = [
        (ChannelSpatialDistillLoss(), (student, teacher),
         ([s.float() for s in student], [t.float() for t in teacher]),
         _naive_fp16_feat_loss(student, teacher)),
        (SoftLabelKLLoss(), (logits.half(), target.half()),
         (logits.half().float(), target.half().float()),
         16 * F.kl_div(F.log_softmax(logits.half() / 4, 1),
                       F.log_softmax(target.half() / 4, 1),
                       reduction='batchmean', log_target=True) * 0.05),
        (LabelClusterLoss(), (feats.half(), labels, 10),
         (feats.half().float(), labels, 10),
         0.01 * ((1 - F.cosine_similarity(
             feats.half(), feats.half().mean(0, keepdim=True), dim=1)) / 2
         ).mean()),
    ]
    for loss, args, ref_args, naive in cases:
        got, ref = loss(*args), loss(*ref_args)
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(ref.item(), rel=1e-6)
        # the test can tell: fp16 arithmetic is off by more than 1%
        assert naive.dtype == torch.float16
        assert abs(naive.item() - ref.item()) > 0.01 * ref.item(), \
            type(loss).__name__


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_channel_spatial_loss_finite_on_all_zero_features(dtype):
    """A dead unit gives all-zero features (e.g. a binary conv behind a ReLU:
    constant outputs, which BatchNorm maps to 0). ``loss_feat`` and its
    gradient stay finite and bounded; before, the gradient of an all-zero
    student row was 1e12 times the incoming one (inf in fp16)."""
    loss = ChannelSpatialDistillLoss()
    g = torch.Generator().manual_seed(0)
    zeros = torch.zeros(2, 4, 3, 3, dtype=dtype)
    teacher = torch.randn(2, 4, 3, 3, generator=g).to(dtype)
    for s, t in ((zeros, zeros), (zeros, teacher), (teacher, zeros)):
        s = s.clone().requires_grad_()
        value = loss([s], [t])
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(s.grad).all()
        assert s.grad.abs().max() < 1.0
    assert loss([zeros], [zeros]).item() == 0.0
    # a zero student against a teacher: distance of 0 to a unit row, i.e.
    # 1 per row: (sqrt(B) / C + sqrt(B) / (H*W)) / B
    b, c, hw = 2, 4, 9
    expected = (math.sqrt(b) / c + math.sqrt(b) / hw) / b
    assert loss([zeros], [teacher]).item() == pytest.approx(expected,
                                                            rel=1e-3)


def test_all_zero_guard_leaves_other_rows_bitwise():
    """Only exactly-zero rows take the new path: every other value and
    gradient is the clamp-and-divide one, bitwise."""
    import skd_bnn_mm.models.losses.channel_spatial_distill_loss as mod
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 7, generator=g)
    x[0, 1] = 0.0  # one all-zero row
    x[1, 2] = 1e-14  # tiny, not zero: still clamped
    for detach in (False, True):
        a = x.clone().requires_grad_()
        got = mod._unit_rows(a, detach_norm=detach)
        got.sum().backward()
        b = x.clone().requires_grad_()
        norm = torch.linalg.vector_norm(b, dim=-1,
                                        keepdim=True).clamp_min(mod._EPS)
        old = b / (norm.detach() if detach else norm)
        old.sum().backward()
        assert torch.equal(got, old)
        keep = torch.ones(2, 5, dtype=torch.bool)
        keep[0, 1] = False
        assert torch.equal(a.grad[keep], b.grad[keep])
        assert a.grad[0, 1].abs().max() <= 1.0
        assert b.grad[0, 1].abs().max() > 1e10  # what the guard removes
