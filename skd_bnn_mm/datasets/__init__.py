from .cifar10_pickle import CIFAR10Pickle
from .label_check import check_labels_fit, model_num_classes
from .synthetic_cls_dataset import SyntheticClsDataset
from .transforms import LoadImageToRGB, PaddedRandomCrop

__all__ = [
    'CIFAR10Pickle', 'LoadImageToRGB', 'PaddedRandomCrop',
    'SyntheticClsDataset', 'check_labels_fit', 'model_num_classes'
]
