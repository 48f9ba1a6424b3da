"""Random images with labels, for timing a training run without real data."""
from typing import List, Optional, Sequence

import numpy as np
from mmengine.dataset import BaseDataset
from mmpretrain.registry import DATASETS


@DATASETS.register_module()
class SyntheticClsDataset(BaseDataset):
    """``num_samples`` random ``uint8`` images (``img``, ``H x W x C``) with
    ``gt_label``, generated once from ``seed`` and kept in memory.

    Each sample goes through ``pipeline`` as a loaded image would (a CIFAR
    training pipeline applies directly; drop loading transforms such as
    ``LoadImageFromFile``), so a benchmark times the same per-image and
    per-batch work as training, without any file reading.

    Args:
        num_samples: dataset length; a loader cycles through it.
        img_shape: ``(C, H, W)`` of the images.
        num_classes: labels are drawn uniformly from ``range(num_classes)``.
        seed: seed of the images and labels.
        pipeline: the per-sample transforms.
    """

    def __init__(self,
                 num_samples: int = 256,
                 img_shape: Sequence[int] = (3, 32, 32),
                 num_classes: int = 10,
                 seed: int = 0,
                 pipeline: Sequence = (),
                 **kwargs) -> None:
        if not (isinstance(num_samples, int) and num_samples >= 1):
            raise ValueError(f'num_samples must be a positive int, got '
                             f'{num_samples!r}')
        if len(img_shape) != 3 or min(img_shape) < 1:
            raise ValueError(f'img_shape must be (C, H, W), got {img_shape}')
        if not (isinstance(num_classes, int) and num_classes >= 1):
            raise ValueError(f'num_classes must be a positive int, got '
                             f'{num_classes!r}')
        self.num_samples, self.img_shape = num_samples, tuple(img_shape)
        self.num_classes, self.seed = num_classes, seed
        kwargs.setdefault('metainfo',
                          dict(classes=[str(i) for i in range(num_classes)]))
        super().__init__(pipeline=list(pipeline), serialize_data=False,
                         **kwargs)

    def load_data_list(self) -> List[dict]:
        rng = np.random.default_rng(self.seed)
        c, h, w = self.img_shape
        images = rng.integers(0, 256, (self.num_samples, h, w, c),
                              dtype=np.uint8)
        labels = rng.integers(0, self.num_classes, self.num_samples)
        return [dict(img=img, gt_label=int(y), img_shape=(h, w),
                     ori_shape=(h, w)) for img, y in zip(images, labels)]

    def get_cat_ids(self, idx: int) -> List[int]:
        return [self.get_data_info(idx)['gt_label']]

    def __repr__(self) -> Optional[str]:
        return (f'{type(self).__name__}(num_samples={self.num_samples}, '
                f'img_shape={self.img_shape}, '
                f'num_classes={self.num_classes})')
