from .cifar10_pickle import CIFAR10Pickle
from .transforms import DeferredCropFlip

__all__ = ['CIFAR10Pickle', 'DeferredCropFlip']
