from .load_image_to_rgb import LoadImageToRGB
from .padded_random_crop import PaddedRandomCrop

__all__ = ['LoadImageToRGB', 'PaddedRandomCrop']
