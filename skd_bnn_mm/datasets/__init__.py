from .cifar10_pickle import CIFAR10Pickle

__all__ = ['CIFAR10Pickle']
