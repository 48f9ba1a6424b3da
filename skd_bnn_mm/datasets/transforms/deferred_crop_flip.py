"""Per-sample random crop and flip, drawn in the pipeline, applied on device."""
from numbers import Number
from typing import Sequence, Union

import numpy as np
from mmcv.transforms import BaseTransform
from mmpretrain.registry import TRANSFORMS

PADDING_MODES = ('constant', 'edge', 'reflect', 'symmetric')


@TRANSFORMS.register_module()
class DeferredCropFlip(BaseTransform):
    """Draw a random crop (after padding) and a horizontal flip per sample;
    leave the pixels to :class:`CropFlipClsDataPreprocessor`.

    The pixel work of ``RandomCrop(crop_size, padding)`` + ``RandomFlip``
    costs more per sample than the rest of a CIFAR pipeline, in the loader
    processes; the data preprocessor does it for the whole batch in one
    gather on the training device instead. The draw stays here, per sample,
    so it is seeded like any other transform (``EpochSeedHook`` included).

    The draw consumes numpy's generator exactly as mmpretrain's
    ``RandomCrop`` followed by ``RandomFlip(prob, 'horizontal')`` does, so
    with the same seed the two give the same offsets and flips. Unlike
    mmpretrain's ``RandomCrop``, whose ``padding`` always pads with
    ``pad_val`` (its ``padding_mode`` only applies to ``pad_if_needed``),
    ``padding_mode`` is honoured: ``'edge'`` replicates the border as the
    SKD-BNN recipe asks.

    Adds ``crop_flip`` (a dict: ``top``, ``left``, ``flip``, ``size``,
    ``padding_mode``, ``pad_val`` and the ``source`` image size; ``top``/
    ``left`` in unpadded coordinates, negative inside the padding) and the
    cropped ``img_shape``. It must be the last transform that changes the
    image geometry: the preprocessor refuses images whose size is no longer
    ``source``. Pack it with
    ``dict(type='PackInputs', algorithm_keys=['crop_flip'])``.

    Args:
        crop_size (int | Sequence[int]): output ``(h, w)`` or side.
        padding (int): pixels added on every side before cropping.
            Defaults to 0.
        padding_mode (str): 'constant', 'edge', 'reflect' (mirror without
            repeating the border) or 'symmetric' (mirror repeating it), as
            ``mmcv.impad``. Defaults to 'constant'.
        pad_val (Number | Sequence[Number]): fill of 'constant', one value
            for every channel or one per channel, rounded to the nearest
            integer for integer images (which must hold it). Defaults to 0.
        flip_prob (float): probability of a horizontal flip. Defaults to 0.5.
    """

    def __init__(self,
                 crop_size: Union[int, Sequence[int]],
                 padding: int = 0,
                 padding_mode: str = 'constant',
                 pad_val: Union[Number, Sequence[Number]] = 0,
                 flip_prob: float = 0.5) -> None:
        name = type(self).__name__
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        crop_size = tuple(crop_size)
        if len(crop_size) != 2 or not all(
                isinstance(s, int) and s > 0 for s in crop_size):
            raise ValueError(f'{name}: crop_size must be a positive int or '
                             f'(h, w), got {crop_size!r}')
        if not isinstance(padding, int) or padding < 0:
            raise ValueError(f'{name}: padding must be an int >= 0, got '
                             f'{padding!r}')
        if padding_mode not in PADDING_MODES:
            raise ValueError(f'{name}: padding_mode must be one of '
                             f'{PADDING_MODES}, got {padding_mode!r}')
        values = (pad_val, ) if isinstance(pad_val, Number) else pad_val
        try:
            values = tuple(float(v) for v in values)
        except (TypeError, ValueError):
            values = ()
        if not values or not all(np.isfinite(values)):
            raise ValueError(f'{name}: pad_val must be a finite number or a '
                             f'sequence of them (one per channel), got '
                             f'{pad_val!r}')
        if not isinstance(pad_val, Number):
            pad_val = tuple(pad_val)
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f'{name}: flip_prob must be in [0, 1], got '
                             f'{flip_prob!r}')
        self.crop_size = crop_size
        self.padding = padding
        self.padding_mode = padding_mode
        self.pad_val = pad_val
        self.flip_prob = float(flip_prob)

    def transform(self, results: dict) -> dict:
        img = results['img']
        h, w = img.shape[:2]
        if self.padding and self.padding_mode == 'constant' and \
                np.issubdtype(img.dtype, np.integer):
            info = np.iinfo(img.dtype)
            values = np.round(np.atleast_1d(self.pad_val))
            if values.min() < info.min or values.max() > info.max:
                raise ValueError(
                    f'{type(self).__name__}: pad_val {self.pad_val!r} does '
                    f'not fit {img.dtype} images ({info.min}..{info.max})')
        th, tw = self.crop_size
        ph, pw = h + 2 * self.padding, w + 2 * self.padding
        if ph < th or pw < tw:
            raise ValueError(
                f'{type(self).__name__}: crop {self.crop_size} is larger '
                f'than the padded image ({ph}, {pw}); raise `padding` or '
                f'resize first')
        if (ph, pw) == (th, tw):  # as RandomCrop: no draw
            top, left = 0, 0
        else:
            top = np.random.randint(0, ph - th + 1)
            left = np.random.randint(0, pw - tw + 1)
        # RandomFlip(prob, 'horizontal') draws this way
        flip = np.random.choice(['horizontal', None],
                                p=[self.flip_prob, 1.0 - self.flip_prob])
        results['crop_flip'] = dict(
            top=int(top) - self.padding,
            left=int(left) - self.padding,
            flip=flip is not None,
            size=self.crop_size,
            padding_mode=self.padding_mode,
            pad_val=self.pad_val,
            source=(h, w))
        results['img_shape'] = self.crop_size
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(crop_size={self.crop_size}, '
                f'padding={self.padding}, '
                f"padding_mode='{self.padding_mode}', "
                f'pad_val={self.pad_val}, flip_prob={self.flip_prob})')
