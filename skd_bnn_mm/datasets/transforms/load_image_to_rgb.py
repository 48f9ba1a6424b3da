"""One image loader for datasets, files and inference: always RGB out."""
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmpretrain.registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadImageToRGB(LoadImageFromFile):
    """Give the rest of the pipeline an RGB ``img``, wherever it came from.

    OpenMMLab reads image files as BGR (``LoadImageFromFile``, and
    mmpretrain's inferencers, which read the file themselves and drop
    ``LoadImageFromFile`` from the test pipeline), while in-memory datasets
    such as CIFAR-10 hold RGB arrays. A model trained on one and fed the
    other sees its colours swapped. This transform states the order:

    - a sample without ``img`` is read from ``img_path`` like
      ``LoadImageFromFile`` (all of its arguments apply);
    - a sample's ``channel_order`` key says what its array holds
      (``'rgb'`` from :class:`CIFAR10Pickle`); without it the array is taken
      as BGR, the OpenMMLab convention for arrays and files;
    - the output is RGB (``channel_order='rgb'``), so the data preprocessor
      keeps ``to_rgb=False``.

    Unlike ``LoadImageFromFile`` it is kept by mmpretrain's inferencers, so a
    PNG or JPEG file gives the same input as the dataset's array.
    """

    def transform(self, results: dict) -> dict:
        if results.get('img') is None:
            results = super().transform(results)
            if results is None:  # ignore_empty and an unreadable file
                return None
            order = 'bgr'
        else:
            order = results.get('channel_order', 'bgr')
            img = results['img']
            if self.to_float32:
                img = img.astype(np.float32)
            results['img'] = img
            results.setdefault('img_shape', img.shape[:2])
            results.setdefault('ori_shape', img.shape[:2])
        if order not in ('rgb', 'bgr'):
            raise ValueError(f'channel_order {order!r} of the sample must be '
                             "'rgb' or 'bgr'")
        img = results['img']
        if order == 'bgr' and img.ndim == 3 and img.shape[2] == 3:
            results['img'] = np.ascontiguousarray(img[..., ::-1])
        results['channel_order'] = 'rgb'
        return results
