from .bnn_resnet18 import BNNResNet18
from .bnn_resnet18_cifar import BNNResNet18CIFAR
from .bnn_resnet20_cifar import BNNResNet20CIFAR
from .bnn_vgg_small import BNNVGGSmall

__all__ = ['BNNResNet18', 'BNNResNet18CIFAR', 'BNNResNet20CIFAR', 'BNNVGGSmall']
from .binarized_backbone import BinarizedBackbone  # noqa: E402
__all__ += ['BinarizedBackbone']
