"""The .bnn 1-bit format: exact round trip on the paper's networks, layout,
size, and refusal of anything that is not plain data."""
import io
import json

import numpy as np
import pytest
import torch

from skd_bnn_mm.deploy import (BNNFormatError, PackedBinaryConv2d, load_1bit,
                               read_1bit, save_1bit)
from skd_bnn_mm.models.layers import IRConv2d

from deploy_helpers import PAPER_CONFIGS, paper_model  # noqa: F401


def logits(model, x):
    with torch.no_grad():
        return model(x, mode='tensor')


@pytest.mark.parametrize('name', list(PAPER_CONFIGS))
def test_round_trip_is_bit_exact(name, paper_model, tmp_path):
    model, model_cfg, size = paper_model(name)
    path = tmp_path / f'{name}.bnn'
    header = save_1bit(model, str(path), model_cfg)
    loaded = load_1bit(str(path))

    binary = [n for n, m in model.named_modules() if isinstance(m, IRConv2d)]
    assert sorted(header['binary_convs']) == sorted(binary)
    assert not any(isinstance(m, IRConv2d) for m in loaded.modules())
    assert sum(isinstance(m, PackedBinaryConv2d)
               for m in loaded.modules()) == len(binary)
    assert not loaded.training

    x = torch.randn(2, 3, size, size, generator=torch.Generator()
                    .manual_seed(1))
    assert torch.equal(logits(loaded, x), logits(model, x))

    if name == 'resnet18_cifar':
        # size: 1 bit per binary weight + int8 exponents + fp32 rest
        state = model.state_dict()
        packed = sum((m.weight[0].numel() + 7) // 8 * m.out_channels
                     + m.out_channels for m in model.modules()
                     if isinstance(m, IRConv2d))
        rest = sum(v.numel() * v.element_size() for k, v in state.items()
                   if not any(k == f'{n}.{p}' for n in binary
                              for p in ('weight', 'ede_k', 'ede_t')))
        file_size = path.stat().st_size
        assert packed + rest <= file_size <= packed + rest + 64 * 1024
        buf = io.BytesIO()
        torch.save(state, buf)
        ratio = buf.getbuffer().nbytes / file_size
        assert ratio > 15, ratio


def raw_header(path):
    """The safetensors header, parsed by hand: 8-byte length, then JSON."""
    with open(path, 'rb') as f:
        n = int.from_bytes(f.read(8), 'little')
        return json.loads(f.read(n))


def test_layout_is_safetensors_with_json_header(paper_model, tmp_path):
    model, model_cfg, _ = paper_model('resnet20_cifar')
    path = tmp_path / 'r20.bnn'
    save_1bit(model, str(path), model_cfg, dict(classes=['a', 'b']))
    raw = raw_header(path)
    header = json.loads(raw['__metadata__']['skd_bnn_mm'])
    assert header['format'] == 'skd_bnn_mm.bnn' and header['version'] == 1
    assert header['meta'] == {'classes': ['a', 'b']}
    assert header['model']['type'] == 'ImageClassifier'
    conv = model.backbone.layer1[0].conv1
    rec = raw['backbone.layer1.0.conv1.packed']
    assert rec['dtype'] == 'U8' and rec['shape'] == [16, (16 * 9 + 7) // 8]
    assert raw['backbone.layer1.0.conv1.exponent']['dtype'] == 'I8'
    # no latent weight and no EDE buffer is stored for a binary conv
    assert 'backbone.layer1.0.conv1.weight' not in raw
    assert not any('ede_' in k for k in raw)
    assert raw['backbone.stem_conv.weight']['dtype'] == 'F32'

    _, tensors = read_1bit(str(path))
    bits = tensors['backbone.layer1.0.conv1.packed'].numpy()
    exps = tensors['backbone.layer1.0.conv1.exponent']
    with torch.no_grad():
        wb = conv.standardized_weight()
        signs = (wb.reshape(16, -1) >= 0).numpy().astype(np.uint8)
        scale = conv.weight_scale(wb).reshape(-1).double()
    assert np.array_equal(np.unpackbits(bits, axis=1, count=144), signs)
    assert torch.equal(torch.pow(2.0, exps.double()), scale)


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f'touch {self.marker}', ))


def test_pickles_and_other_files_are_refused(tmp_path):
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.bnn'
    torch.save({'x': Payload(str(marker))}, evil)
    with pytest.raises(BNNFormatError, match='not a .bnn'):
        read_1bit(str(evil))
    assert not marker.exists()

    from safetensors.torch import save_file
    plain = tmp_path / 'plain.bnn'
    save_file({'w': torch.zeros(2)}, str(plain))
    with pytest.raises(BNNFormatError, match='without the "skd_bnn_mm"'):
        read_1bit(str(plain))
    future = tmp_path / 'future.bnn'
    save_file({'w': torch.zeros(2)}, str(future), metadata={
        'skd_bnn_mm': json.dumps(dict(format='skd_bnn_mm.bnn', version=99))})
    with pytest.raises(BNNFormatError, match='version 99'):
        read_1bit(str(future))
    with pytest.raises(FileNotFoundError):
        read_1bit(str(tmp_path / 'missing.bnn'))
