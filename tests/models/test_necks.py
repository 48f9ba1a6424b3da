"""PoolBNNeck: the penultimate feature from the last feature map."""
import pytest
import torch
import torch.nn as nn
from mmpretrain.registry import MODELS

from skd_bnn_mm.models.necks import PoolBNNeck


def test_avg_pool_values_and_bn():
    torch.manual_seed(0)
    x = torch.randn(4, 8, 3, 3)
    plain = PoolBNNeck(8, pool='avg', norm=False)
    assert plain.bn is None and not list(plain.parameters())
    (out, ) = plain((torch.randn(4, 2, 5, 5), x))  # only the last map
    assert out.shape == (4, 8)
    torch.testing.assert_close(out, x.sum(dim=(2, 3)) / 9)

    neck = MODELS.build(dict(type='PoolBNNeck', in_channels=8))
    assert isinstance(neck.bn, nn.BatchNorm1d) and neck.bn.num_features == 8
    neck.train()
    (normed, ) = neck(x)
    pooled = x.mean(dim=(2, 3))
    expected = (pooled - pooled.mean(0)) / torch.sqrt(
        pooled.var(0, unbiased=False) + neck.bn.eps)
    torch.testing.assert_close(normed, expected)


def test_flatten():
    x = torch.randn(2, 4, 2, 2)
    neck = PoolBNNeck(16, pool='flatten', norm=False)
    (out, ) = neck(x)
    assert out.shape == (2, 16)
    assert torch.equal(out, x.reshape(2, 16))
    assert neck.bn is None
    with_bn = PoolBNNeck(16, pool='flatten', norm=True)
    assert with_bn.bn.num_features == 16
    assert with_bn(x)[0].shape == (2, 16)


def test_vgg_small_size():
    (out, ) = PoolBNNeck(8192, pool='flatten', norm=False)(
        torch.randn(2, 512, 4, 4))
    assert out.shape == (2, 8192)


def test_errors():
    with pytest.raises(ValueError, match=r"'avg', 'flatten'"):
        PoolBNNeck(8, pool='max')
    with pytest.raises(ValueError, match=r'C\*H\*W .*= 32'):
        PoolBNNeck(8, pool='flatten')(torch.randn(2, 8, 2, 2))
    with pytest.raises(ValueError, match=r'= 4\)'):
        PoolBNNeck(8)(torch.randn(2, 4, 2, 2))
    with pytest.raises(ValueError, match='B, C, H, W'):
        PoolBNNeck(8)(torch.randn(2, 8))
