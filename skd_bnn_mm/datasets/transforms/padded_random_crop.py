"""mmpretrain's ``RandomCrop`` with ``padding_mode`` honoured for ``padding``."""
import mmcv
from mmpretrain.datasets.transforms import RandomCrop
from mmpretrain.registry import TRANSFORMS


@TRANSFORMS.register_module()
class PaddedRandomCrop(RandomCrop):
    """``RandomCrop`` whose ``padding`` pads with ``padding_mode``.

    mmpretrain's ``RandomCrop`` always fills ``padding`` with ``pad_val``
    (its ``padding_mode`` only reaches ``pad_if_needed``), so
    ``RandomCrop(32, padding=4, padding_mode='edge')`` pads CIFAR images with
    zeros where the SKD-BNN recipe replicates the border. Here ``padding``
    uses ``padding_mode`` too; the arguments, the crop and the random draw
    (``rand_crop_params``, numpy's global generator) are ``RandomCrop``'s, so
    with the same seed both crop at the same offsets.
    """

    def transform(self, results: dict) -> dict:
        if self.padding is not None:
            results['img'] = mmcv.impad(
                results['img'],
                padding=self.padding,
                pad_val=self.pad_val,
                padding_mode=self.padding_mode)
        # The image is padded already: let RandomCrop do the rest.
        padding, self.padding = self.padding, None
        try:
            return super().transform(results)
        finally:
            self.padding = padding
