"""SKDImageClassifier: losses, teacher only in training, ablations, errors,
the same SKD steps in the channels-last layout."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.optim import build_optim_wrapper
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from tiny_skd_step import SGD, random_batches, tiny_skd_model, train_steps

from skd_bnn_mm.models.classifiers import SKDImageClassifier
from skd_bnn_mm.models.distill import (OutputRecorder, SelfTeacher,
                                      flatten_records)
from skd_bnn_mm.models.layers import IRConv2d
from skd_bnn_mm.models.losses import ChannelSpatialDistillLoss


class TinyBackbone(nn.Module):
    """Stem + two binary units (conv -> BN -> Hardtanh), 8x8 input."""

    def __init__(self, binary=True):
        super().__init__()
        conv = IRConv2d if binary else nn.Conv2d
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(4), nn.Hardtanh())
        self.conv1, self.bn1, self.act1 = conv(4, 4, 3, 1, 1, bias=False), \
            nn.BatchNorm2d(4), nn.Hardtanh()
        self.conv2, self.bn2, self.act2 = conv(4, 8, 3, 2, 1, bias=False), \
            nn.BatchNorm2d(8), nn.Hardtanh()

    def forward(self, x):
        x = self.stem(x)
        x = self.act1(self.bn1(self.conv1(x)) + x)
        return (self.act2(self.bn2(self.conv2(x))), )


def _model(distill=None, backbone=None, **kwargs):
    torch.manual_seed(0)
    model = SKDImageClassifier(
        backbone=backbone or TinyBackbone(),
        neck=dict(type='PoolBNNeck', in_channels=8, pool='avg', norm=True),
        head=dict(type='LinearClsHead', num_classes=3, in_channels=8),
        distill={'units': ['act1', 'act2'], **(distill or {})}, **kwargs)
    model.init_weights()
    return model.train()


def _f(t):
    return float(t.detach())


def _batch(n=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    labels = torch.arange(n) % 3
    return x, [DataSample().set_gt_label(int(y)) for y in labels], labels


def test_loss_parts_and_values():
    model, (x, samples, labels) = _model(), _batch()
    losses = model(x, samples, mode='loss')
    assert list(losses) == ['loss_cls', 'loss_feat', 'loss_label',
                            'loss_cluster']
    # cross-entropy of the head on the same logits (BN in train mode gives the
    # same batch statistics on a second pass)
    logits = model(x, mode='tensor')
    assert _f(losses['loss_cls']) == pytest.approx(
        _f(F.cross_entropy(logits, labels)), rel=1e-6)
    assert _f(losses['loss_cls']) == _f(model.head.loss(
        model.extract_feat(x), samples)['loss'])
    # feature loss == the loss on an independently run student/teacher pair
    backbone = TinyBackbone()
    backbone.load_state_dict(model.backbone.state_dict())
    teacher = SelfTeacher(backbone)
    recorder = OutputRecorder(backbone, ['act1', 'act2', 'conv1', 'conv2'])
    with recorder.record() as s:
        backbone(x)
    with torch.no_grad(), recorder.record() as t:
        teacher(x, s)
    expected = ChannelSpatialDistillLoss()([*s['act1'], *s['act2']],
                                           [*t['act1'], *t['act2']])
    assert _f(losses['loss_feat']) == pytest.approx(_f(expected),
                                                       rel=1e-6)
    assert _f(losses['loss_feat']) > 0
    # label loss off in the first epoch, on afterwards
    assert _f(losses['loss_label']) == 0.0
    assert _f(losses['loss_cluster']) > 0
    sum(losses.values()).backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0


def test_label_loss_uses_the_bank_after_an_update():
    model, (x, samples, labels) = _model(), _batch()
    bank = model.soft_label_bank
    bank.bank.copy_(torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0]]))
    bank.num_updates.fill_(1)
    logits = model(x, mode='tensor')
    expected = model.label_loss(logits, bank.bank[labels])
    losses = model(x, samples, mode='loss')
    assert _f(losses['loss_label']) == pytest.approx(_f(expected),
                                                        rel=1e-6)
    assert _f(losses['loss_label']) > 0


def test_loss_accumulates_correct_predictions_into_bank():
    model, (x, samples, labels) = _model(), _batch()
    model(x, samples, mode='loss')
    logits = model(x, mode='tensor').detach()
    correct = logits.argmax(1) == labels
    assert int(model.soft_label_bank.counts.sum()) == int(correct.sum())
    expected = torch.zeros(3, 3).index_add_(0, labels[correct],
                                            logits[correct])
    torch.testing.assert_close(model.soft_label_bank.sums, expected,
                               rtol=1e-5, atol=1e-6)


def _count_calls(module):
    calls = []
    module.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_teacher_and_recorder_only_in_loss_mode():
    model, (x, samples, _) = _model(), _batch()
    backbone_calls = _count_calls(model.backbone)
    twin_calls = _count_calls(model.teacher.twin)
    hooks = {name: list(m._forward_hooks.values())
             for name, m in model.backbone.named_modules()
             if m._forward_hooks}
    assert sorted(hooks) == ['', 'act1', 'act2', 'conv1', 'conv2']
    model(x, samples, mode='loss')
    # the twin shares the backbone's hooks: each counter sees both passes
    assert len(backbone_calls) == len(twin_calls) == 2
    model.eval()
    with torch.no_grad():
        preds = model(x, samples, mode='predict')
        model(x, mode='tensor')
    assert len(backbone_calls) == 4
    assert preds[0].pred_score.shape == (3, )
    # the recording hooks stay, idle outside 'loss'; a second step
    # installs nothing new and patches no forward
    model.train()
    model(x, samples, mode='loss')
    assert {name: list(m._forward_hooks.values())
            for name, m in model.backbone.named_modules()
            if m._forward_hooks} == hooks
    assert all(h.outputs is None for hs in hooks.values() for h in hs
               if hasattr(h, 'outputs'))
    assert not any('forward' in vars(m) for m in model.modules())


def test_pre_logits_once_and_logits_from_the_head():
    model, (x, samples, labels) = _model(), _batch()
    calls = []
    original = model.head.pre_logits
    model.head.pre_logits = lambda feats: calls.append(1) or original(feats)
    losses = model(x, samples, mode='loss')
    assert len(calls) == 1
    del model.head.pre_logits
    # the cluster loss reads the head's input (what fc sees)
    feats = model.extract_feat(x, stage='pre_logits')
    expected = model.cluster_loss(feats, labels, 3)
    assert _f(losses['loss_cluster']) == pytest.approx(_f(expected),
                                                          rel=1e-6)


def test_train_rebuilds_the_twin_after_modules_are_replaced():
    """As SyncBN conversion does after the model is built: the twin and the
    recorder follow the new modules at the next train()."""
    model, (x, samples, _) = _model(), _batch()
    old_twin = model.teacher.twin
    model.train()
    assert model.teacher.twin is old_twin  # nothing changed: same twin
    new_bn = nn.BatchNorm2d(4)
    new_bn.load_state_dict(model.backbone.bn1.state_dict())
    model.backbone.bn1 = new_bn
    new_act = nn.Hardtanh()
    model.backbone.act1 = new_act
    model.train()
    assert model.teacher.twin is not old_twin
    assert model.teacher.twin.bn1.weight is new_bn.weight
    assert model.teacher.twin.act1 is new_act
    assert len(new_act._forward_hooks) == 1
    losses = model(x, samples, mode='loss')
    assert _f(losses['loss_feat']) > 0


def test_bn_statistics_only_from_student_pass():
    x, samples, _ = _batch()
    reference, model = _model(), _model()
    reference.extract_feat(x)  # student forward only
    model(x, samples, mode='loss')
    for (k, v), (k2, v2) in zip(reference.state_dict().items(),
                                model.state_dict().items()):
        assert k == k2
        if 'running' in k or 'num_batches' in k:
            assert torch.equal(v, v2), k


def test_ablations_drop_losses_and_passes():
    x, samples, _ = _batch()
    model = _model(dict(feat_loss=None))
    calls = _count_calls(model.backbone)
    assert list(model(x, samples, mode='loss')) == ['loss_cls', 'loss_label',
                                                    'loss_cluster']
    assert len(calls) == 1 and model.teacher is None
    model = _model(dict(label_loss=None, cluster_loss=None))
    assert list(model(x, samples, mode='loss')) == ['loss_cls', 'loss_feat']
    assert model.soft_label_bank is None
    assert not hasattr(model, '_ddp_params_and_buffers_to_ignore')
    model = _model(dict(feat_loss=None, label_loss=None, cluster_loss=None),
                   backbone=TinyBackbone(binary=False))
    assert list(model(x, samples, mode='loss')) == ['loss_cls']


def test_bank_is_in_state_dict_and_ignored_by_ddp():
    model = _model()
    keys = [k for k in model.state_dict() if k.startswith('soft_label_bank.')]
    assert sorted(keys) == sorted(f'soft_label_bank.{n}' for n in (
        'bank', 'sums', 'counts', 'last_counts', 'num_updates', 'last_epoch'))
    assert model._ddp_params_and_buffers_to_ignore == [
        'soft_label_bank.sums', 'soft_label_bank.counts']


def test_configuration_errors():
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['alpha'\]"):
        _model(dict(alpha=1.0))
    with pytest.raises(ValueError, match=r'candidate names: .*bn2'):
        _model(dict(units=['act3']))
    with pytest.raises(ValueError, match='needs binary convs'):
        _model(backbone=TinyBackbone(binary=False))
    with pytest.raises(ValueError, match='needs a LinearClsHead'):
        SKDImageClassifier(backbone=TinyBackbone(), head=dict(
            type='StackedLinearClsHead', num_classes=3, in_channels=8,
            mid_channels=[4]), distill=dict(units=['act1']))
    with pytest.raises(ValueError, match='cal_acc'):
        SKDImageClassifier(backbone=TinyBackbone(), head=dict(
            type='LinearClsHead', num_classes=3, in_channels=8,
            cal_acc=True), distill=dict(units=['act1']))
    model, (x, samples, _) = _model(), _batch()
    for s in samples:
        s.set_gt_score(torch.ones(3) / 3)
    with pytest.raises(ValueError, match='hard labels'):
        model(x, samples, mode='loss')


def test_registered_and_builds_with_project_backbone():
    model = MODELS.build(dict(
        type='SKDImageClassifier',
        backbone=dict(type='BNNResNet20CIFAR'),
        neck=dict(type='PoolBNNeck', in_channels=64),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=64),
        distill=dict(units=r'layer\d+\.\d+\.act\d')))
    assert len(model.unit_names) == 18
    assert model.unit_names == model.backbone.unit_names()
    by_default = MODELS.build(dict(
        type='SKDImageClassifier',
        backbone=dict(type='BNNVGGSmall'),
        neck=dict(type='PoolBNNeck', in_channels=8192, pool='flatten',
                  norm=False),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=8192)))
    assert by_default.unit_names == [f'unit{i}.act' for i in range(1, 6)]


CONFIGS = {  # config -> number of recorded unit outputs
    'skd-bnn_resnet20_1xb128_cifar10.py': 18,
    'skd-bnn_vgg-small_1xb128_cifar10.py': 5,
    'skd-bnn_resnet18_1xb128_cifar10.py': 16,
    'skd-bnn_resnet18_8xb32_in1k.py': 16,
    'skd-bnn_resnet18_8xb32_in1k-stage2.py': 16,
    'skd-bnn_mmpretrain-resnet18-convcfg_1xb128_cifar10.py': 16,
}


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_configs_build_and_record_all_units(name):
    import os.path as osp

    from mmengine.config import Config
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(osp.join(root, 'configs', 'skd_bnn', name))
    assert [h['type'] for h in cfg.custom_hooks] == ['EDEHook',
                                                     'SoftLabelBankHook']
    model = MODELS.build(cfg.model)
    assert isinstance(model, SKDImageClassifier)
    assert model.label_loss.temperature == 4.0
    assert (model.feat_loss.loss_weight, model.label_loss.loss_weight,
            model.cluster_loss.loss_weight) == (1.0, 0.05, 0.01)
    if 'in1k' in name:  # 224 px images: only count the unit modules
        assert len(model.unit_names) == CONFIGS[name]
        return
    with torch.no_grad(), model.recorder.record() as rec:
        model.backbone(torch.randn(2, 3, 16, 16))  # small: just count
    outputs = flatten_records(rec, model.unit_names)
    assert len(outputs) == CONFIGS[name]
    assert all(t.dim() == 4 for t in outputs)


def test_deepcopy_gets_its_own_twin_and_hooks():
    """A deep copy (mmengine's EMA model, converters) trains on its own:
    the copy's twin shares the copy's parameters and its recorder hooks are
    the copy's. Changing the copy's binary weights changes its losses
    exactly as on a separately built model, and not the original's."""
    (x, samples, _) = _batch()

    def flip(m):  # a different model: the binary convs' weights negated
        with torch.no_grad():
            for conv in m.modules():
                if isinstance(conv, IRConv2d):
                    conv.weight.mul_(-1.5)

    model, reference, flipped = _model(), _model(), _model()
    flip(flipped)
    model(x, samples, mode='loss')  # one step before copying
    reference(x, samples, mode='loss')
    flipped(x, samples, mode='loss')
    other = copy.deepcopy(model)
    flip(other)
    assert other.teacher.twin.conv1.weight is other.backbone.conv1.weight
    assert other.teacher.mirrors(other.backbone)
    a, b = model(x, samples, mode='loss'), other(x, samples, mode='loss')
    ref = reference(x, samples, mode='loss')
    ref_flipped = flipped(x, samples, mode='loss')
    assert _f(a['loss_feat']) != pytest.approx(_f(b['loss_feat']))
    for key in a:
        assert _f(a[key]) == _f(ref[key]), key
        assert _f(b[key]) == _f(ref_flipped[key]), key


# ------------------------------------------------ channels-last layout
def _channels_last_outputs(model):
    """Records, per binary conv call of the next forwards, whether its
    output is in the channels-last layout (and not also contiguous)."""
    seen = []
    handles = [m.register_forward_hook(
        lambda mod, args, out: seen.append(out.is_contiguous(
            memory_format=torch.channels_last) and not out.is_contiguous()))
        for m in model.modules() if isinstance(m, IRConv2d)]
    return seen, handles


def test_skd_steps_channels_last_match_plain_float32():
    """The student and teacher passes, the losses and the SGD steps give
    the plain layout's losses in NHWC (within float32 rounding, on a model
    small enough that rounding flips no binary activation)."""
    plain = train_steps(tiny_skd_model())
    fast_model = tiny_skd_model(channels_last=True)
    layouts, handles = _channels_last_outputs(fast_model)
    fast = train_steps(fast_model)
    for h in handles:
        h.remove()
    assert layouts and all(layouts)  # the binary convs really ran NHWC
    assert all(p.is_contiguous(memory_format=torch.channels_last)
               for p in fast_model.parameters() if p.dim() == 4)
    for a, b in zip(plain, fast):
        assert a.keys() == b.keys()
        assert a['loss_feat'] > 0 and a['loss_cluster'] > 0
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-9), key


def test_skd_steps_channels_last_match_plain_float64():
    """In float64 rounding is far too small to flip any sign, so the whole
    three-step trajectory agrees to ~1e-15: any layout mistake would not."""
    results = []
    for channels_last in (False, True):
        model = tiny_skd_model(torch.float64, channels_last)
        optim_wrapper = build_optim_wrapper(model, copy.deepcopy(SGD))
        losses = []
        for batch in random_batches():
            data = model.data_preprocessor(batch, True)
            data['inputs'] = data['inputs'].double()
            parts = model(**data, mode='loss')
            optim_wrapper.update_params(sum(parts.values()))
            losses.append([float(v.detach()) for v in parts.values()])
        results.append(losses)
    for a, b in zip(*results):
        assert b == pytest.approx(a, rel=1e-12, abs=1e-15)
