import torch
import torch.nn as nn
from mmpretrain.models import ImageClassifier

from skd_bnn_mm.models.utils import swap_modules, tensor_forward


class _Block(nn.Module):

    def __init__(self, act):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.act = act  # the same module object in several blocks


def _model():
    shared = nn.ReLU()
    model = nn.Sequential(_Block(shared), _Block(shared),
                          nn.Sequential(nn.ReLU(), nn.Tanh()))
    model.alias = shared  # a third name for the shared ReLU
    return model, shared


def test_filter_nested_and_shared():
    model, shared = _model()
    model.eval()
    seen = []

    def make(name, old):
        seen.append(name)
        return nn.Hardtanh()

    report = swap_modules(model, lambda n, m: type(m) is nn.ReLU, make)
    # the shared ReLU is built once, under its first name; the nested one
    # too; the Tanh is left
    assert seen == ['0.act', '2.0']
    assert list(report.swapped) == ['0.act', '2.0']
    assert report.model is model
    new = report.swapped['0.act']
    assert model[0].act is new and model[1].act is new and model.alias is new
    assert isinstance(model[2][0], nn.Hardtanh)
    assert isinstance(model[2][1], nn.Tanh)
    assert not any(type(m) is nn.ReLU for m in model.modules())
    assert not new.training  # takes the old module's mode
    assert shared not in list(model.modules())


def test_children_of_a_picked_module_are_not_visited():
    model, _ = _model()
    names = []

    def pick(name, m):
        names.append(name)
        return name == '0'

    report = swap_modules(model, pick, lambda n, m: nn.Identity())
    assert '0.conv' not in names and '0.act' not in names
    assert '1.conv' in names
    assert isinstance(model[0], nn.Identity)
    assert list(report.swapped) == ['0']


def test_root_is_replaced_and_nothing_picked():
    conv = nn.Conv2d(1, 1, 1)
    report = swap_modules(conv, lambda n, m: n == '',
                          lambda n, m: nn.Identity())
    assert isinstance(report.model, nn.Identity)
    assert list(report.swapped) == ['']
    model, _ = _model()
    before = list(model.modules())
    report = swap_modules(model, lambda n, m: False, lambda n, m: 1 / 0)
    assert report.swapped == {} and list(model.modules()) == before


def _classifier():
    return ImageClassifier(
        backbone=dict(type='ResNet_CIFAR', depth=18, num_stages=1,
                      out_indices=(0, ), base_channels=4, strides=(1, ),
                      dilations=(1, )),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=3, in_channels=4),
        data_preprocessor=dict(type='ClsDataPreprocessor', mean=[100.] * 3,
                               std=[50.] * 3))


def test_tensor_forward():
    torch.manual_seed(0)
    clf = _classifier().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        out = tensor_forward(clf, x)
        # mode='tensor': the head's raw logits of x itself, without the
        # data preprocessor (whose mean 100 would change them)
        ref = clf.head.fc(clf.neck(clf.backbone(x))[-1])
        assert torch.equal(out, ref)
        plain = nn.Linear(4, 2)
        v = torch.randn(3, 4)
        assert torch.equal(tensor_forward(plain, v), plain(v))
