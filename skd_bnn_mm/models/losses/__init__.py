from .channel_spatial_distill_loss import ChannelSpatialDistillLoss
from .label_cluster_loss import LabelClusterLoss
from .soft_label_kl_loss import SoftLabelKLLoss

__all__ = ['ChannelSpatialDistillLoss', 'LabelClusterLoss', 'SoftLabelKLLoss']
