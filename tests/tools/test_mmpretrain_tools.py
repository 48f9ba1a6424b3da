"""tools/test.py output in mmpretrain's formats, image-file inference,
ModelHub names and --auto-scale-lr, on a checkpoint of a real tiny run."""
import json
import os.path as osp
import pickle
import sys

import numpy as np
import pytest
import torch
from tool_cli import run_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(ROOT, 'tools', 'train.py')
TEST = osp.join(ROOT, 'tools', 'test.py')
TINY = osp.join(ROOT, 'tests', 'deploy', 'tiny_skd_bnn_cifar10.py')
NAME = 'skd-bnn_resnet20_1xb128_cifar10'
if ROOT not in sys.path:  # tools/ is imported from the checkout
    sys.path.insert(0, ROOT)
from tools import test as test_tool  # noqa: E402


@pytest.fixture(scope='module')
def tested(cifar10_subset, tmp_path_factory):
    """One epoch of the tiny SKD-BNN ResNet-20 (2 x 50 images, with
    ``--auto-scale-lr``), then ``test.py --out pred.pkl`` on its 100 test
    images."""
    root = cifar10_subset(10, 10)
    work = tmp_path_factory.mktemp('tiny_tools')
    run_tool([TRAIN, TINY, '--work-dir', work, '--auto-scale-lr'], root)
    ckpt = work / 'epoch_1.pth'
    pred = work / 'pred.pkl'
    run_tool([TEST, TINY, ckpt, '--work-dir', work / 'test', '--out', pred],
             root)
    return root, ckpt, pred


@pytest.fixture
def data_env(tested, monkeypatch):
    monkeypatch.setenv('CIFAR10_ROOT', tested[0])
    monkeypatch.setenv('CIFAR10_VERIFY_MD5', 'False')
    return tested


def test_out_pickles_predictions_in_mmpretrain_format(tested):
    """The pickle is what mmpretrain's eval_metric.py, confusion_matrix.py
    and analyze_results.py read: a list of per-image dicts, evaluated
    offline by mmpretrain's metrics to the accuracy test.py logged."""
    from mmengine.evaluator import Evaluator
    from mmpretrain.registry import METRICS
    from mmpretrain.structures import DataSample
    _, _, pred = tested
    with open(pred, 'rb') as f:
        results = pickle.load(f)
    assert isinstance(results, list) and len(results) == 100
    assert sorted(r['sample_idx'] for r in results) == list(range(100))
    for r in results:
        assert r['pred_score'].shape == (10, )
        assert int(r['pred_label']) == int(r['pred_score'].argmax())
        assert r['pred_score'].sum().item() == pytest.approx(1, abs=1e-5)
    labels = torch.cat([r['gt_label'] for r in results])
    assert np.bincount(labels.numpy()).tolist() == [10] * 10
    correct = sum(int(r['pred_label']) == int(r['gt_label'])
                  for r in results)
    # eval_metric.py: METRICS.build + Evaluator.offline_evaluate
    metrics = Evaluator([METRICS.build(dict(type='Accuracy', topk=1))]
                        ).offline_evaluate(results, None)
    assert metrics['accuracy/top1'] == pytest.approx(correct)  # 100 images
    logged = [json.loads(line) for line in
              open(next((pred.parent / 'test').glob('*/*.json')))]
    assert logged[-1]['accuracy/top1'] == pytest.approx(correct)
    # confusion_matrix.py: the ConfusionMatrix metric on the same list
    matrix = Evaluator([METRICS.build(dict(type='ConfusionMatrix'))]
                       ).offline_evaluate(results, None)
    matrix = matrix['confusion_matrix/result']
    assert matrix.sum().item() == 100 and matrix.trace().item() == correct
    # analyze_results.py rebuilds DataSamples from these keys
    sample = DataSample().set_gt_label(results[0]['gt_label']) \
        .set_pred_label(results[0]['pred_label']) \
        .set_pred_score(results[0]['pred_score'])
    assert sample.pred_score.shape == (10, )


def test_out_item_metrics_and_refused_options(data_env, tmp_path):
    _, ckpt, _ = data_env
    out = tmp_path / 'metrics.json'
    test_tool.main([TINY, str(ckpt), '--work-dir', str(tmp_path), '--out',
                    str(out), '--no-pin-memory'])
    assert set(json.loads(out.read_text())) == {'accuracy/top1'}
    with pytest.raises(SystemExit, match='--out-item needs --out'):
        test_tool.main([TINY, str(ckpt), '--out-item', 'pred'])
    with pytest.raises(SystemExit, match=r'\*\.pkl'):
        test_tool.main([TINY, str(ckpt), '--out', str(tmp_path / 'p.json'),
                        '--out-item', 'pred'])
    assert not (tmp_path / 'p.json').exists()


def test_checkpoint_of_another_num_classes_is_refused(data_env, tmp_path):
    _, ckpt, _ = data_env
    out = tmp_path / 'pred.pkl'
    with pytest.raises(SystemExit) as err:
        test_tool.main([TINY, str(ckpt), '--work-dir', str(tmp_path),
                        '--out', str(out), '--cfg-options',
                        'model.head.num_classes=5'])
    msg = str(err.value)
    assert 'does not fit the model' in msg and 'nothing was evaluated' in msg
    assert 'head.fc.weight: checkpoint (10, 16) vs model (5, 16)' in msg
    assert not out.exists()


def test_show_dir_and_tta(data_env, tmp_path):
    _, ckpt, _ = data_env
    show = tmp_path / 'vis'
    test_tool.main([TINY, str(ckpt), '--work-dir', str(tmp_path),
                    '--show-dir', str(show), '--interval', '25'])
    assert len(list(show.rglob('*.png'))) == 4  # 100 images, every 25th
    metrics = test_tool.main([TINY, str(ckpt), '--work-dir', str(tmp_path),
                              '--tta', '--out', str(tmp_path / 'tta.pkl')])
    with open(tmp_path / 'tta.pkl', 'rb') as f:
        results = pickle.load(f)
    # mmpretrain's AverageClsScoreTTA averages the scores of the image and
    # its flip (and keeps the first view's pred_label); Accuracy reads them
    assert len(results) == 100 and metrics['accuracy/top1'] == \
        pytest.approx(sum(int(r['pred_score'].argmax()) == int(r['gt_label'])
                          for r in results))


def write_pngs(root, folder, n=None):
    """The dataset's test images as PNG files (lossless), and the dataset."""
    from mmpretrain.registry import DATASETS
    from PIL import Image
    ds = DATASETS.build(dict(type='CIFAR10Pickle', data_root=root,
                             split='test', verify_md5=False))
    folder.mkdir()
    paths = []
    for i in range(n or len(ds)):
        paths.append(str(folder / f'{i}.png'))
        Image.fromarray(ds.get_data_info(i)['img']).save(paths[-1])
    return ds, paths


def test_inferencer_on_png_files_equals_test_tool(data_env, tmp_path):
    """ImageClassificationInferencer reads the files as BGR itself; the
    test pipeline's LoadImageToRGB makes that the dataset's RGB input."""
    from mmpretrain.apis import ImageClassificationInferencer
    from PIL import Image
    root, ckpt, pred = data_env
    _, paths = write_pngs(root, tmp_path / 'png')
    inferencer = ImageClassificationInferencer(TINY, pretrained=str(ckpt))
    scores = np.stack([r['pred_scores'] for r in inferencer(
        paths, batch_size=50)])
    with open(pred, 'rb') as f:
        results = sorted(pickle.load(f), key=lambda r: r['sample_idx'])
    expected = torch.stack([r['pred_score'] for r in results]).numpy()
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    # control: arrays in the wrong order (RGB given where OpenMMLab
    # expects BGR) change the predictions, so the check above can fail
    swapped = [np.asarray(Image.open(p)) for p in paths[:20]]
    wrong = np.stack([r['pred_scores'] for r in inferencer(swapped)])
    assert np.abs(wrong - expected[:20]).max() > 1e-3


def test_model_names_in_modelhub(data_env, tmp_path):
    """get_model / inference_model by name after ``import skd_bnn_mm``."""
    from mmengine.dataset import Compose, default_collate
    from mmpretrain import get_model, inference_model, list_models
    from mmpretrain.apis import ModelHub
    from mmpretrain.registry import TRANSFORMS
    assert NAME in list_models('skd-bnn*')
    model = get_model(NAME)
    assert type(model).__name__ == 'SKDImageClassifier'
    ckpt = tmp_path / 'random.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    ds, paths = write_pngs(data_env[0], tmp_path / 'png', n=2)
    model.eval()
    pipeline = Compose([TRANSFORMS.build(t) for t in
                        ModelHub.get(NAME).config.test_dataloader.dataset
                        .pipeline])
    for i, path in enumerate(paths):
        result = inference_model(NAME, path, pretrained=str(ckpt))
        with torch.no_grad():
            direct = model.test_step(default_collate(
                [pipeline(ds.get_data_info(i))]))[0].pred_score
        np.testing.assert_allclose(result['pred_scores'], direct.numpy(),
                                   rtol=0, atol=1e-6)


def test_auto_scale_lr_on_cifar_config(tested):
    """base_batch_size 128: a batch of 50 on one process trained at
    lr 0.1 * 50 / 128 (warm-up off in the tiny config)."""
    work = tested[1].parent
    records = [json.loads(line) for line in
               open(next(work.glob('*/vis_data/scalars.json')))]
    lrs = [r['lr'] for r in records if 'lr' in r]
    assert len(lrs) == 2  # 100 images, batch 50, logged every iteration
    assert lrs == [pytest.approx(0.1 * 50 / 128, rel=1e-9)] * 2


def _configs():
    import glob
    return sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '*', '*.py'))
                  if '_base_' not in p)


@pytest.mark.parametrize('path', _configs(), ids=osp.basename)
def test_every_config_works_with_mmpretrain_tools(path):
    """--auto-scale-lr needs auto_scale_lr.base_batch_size (the total batch
    of the config's name, e.g. 8xb32 -> 256); vis_cam.py and the
    inferencers need a test pipeline that loads files; browse_dataset.py a
    visualizer without `_scope_`."""
    import re

    from mmengine.config import Config
    cfg = Config.fromfile(path)
    gpus, batch = map(int, re.search(r'_(\d+)xb(\d+)_', path).groups())
    assert cfg.train_dataloader.batch_size == batch
    assert cfg.auto_scale_lr.base_batch_size == gpus * batch
    first = cfg.test_dataloader.dataset.pipeline[0]['type']
    assert first in ('LoadImageToRGB', 'LoadImageFromFile')
    # the network sees RGB: converted once, by the loader or the
    # preprocessor
    to_rgb = cfg.get('data_preprocessor', {}).get('to_rgb', False)
    assert to_rgb == (first == 'LoadImageFromFile')
    assert '_scope_' not in cfg.visualizer
