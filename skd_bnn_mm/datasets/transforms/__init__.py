from .deferred_crop_flip import DeferredCropFlip

__all__ = ['DeferredCropFlip']
