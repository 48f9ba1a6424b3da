from .deferred_crop_flip import DeferredCropFlip
from .load_image_to_rgb import LoadImageToRGB

__all__ = ['DeferredCropFlip', 'LoadImageToRGB']
