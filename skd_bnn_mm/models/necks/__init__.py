from .pool_bn_neck import PoolBNNeck

__all__ = ['PoolBNNeck']
