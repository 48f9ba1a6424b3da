"""Helpers and fixtures of the deployment tests (imported by them)."""
import os.path as osp

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

#: the four networks of the paper: (config, input H=W for the checks)
PAPER_CONFIGS = {
    'resnet20_cifar': ('configs/irnet/irnet_resnet20_1xb128_cifar10.py', 32),
    'vgg-small_cifar': ('configs/irnet/irnet_vgg-small_1xb128_cifar10.py',
                        32),
    'resnet18_cifar': ('configs/irnet/irnet_resnet18_1xb128_cifar10.py', 32),
    # a 64x64 input keeps the ImageNet network's check cheap on a CPU
    'resnet18_in1k': ('configs/irnet/irnet_resnet18_8xb32_in1k.py', 64),
}


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Random affine parameters and running statistics in every BN, so
    that eval mode does not reduce BN to the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.normal_(0, 0.3, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0, 0.2, generator=gen)


@pytest.fixture(scope='session')
def paper_model():
    """Factory: ``paper_model(name) -> (model, model_cfg, input_size)``,
    random weights and BN statistics, eval mode."""
    from mmengine.config import Config

    from skd_bnn_mm.deploy import build_inference_model

    def make(name):
        path, size = PAPER_CONFIGS[name]
        cfg = Config.fromfile(osp.join(ROOT, path))
        torch.manual_seed(0)
        model, model_cfg, _ = build_inference_model(cfg)
        randomize_bn(model)
        return model.eval(), model_cfg, size

    return make
