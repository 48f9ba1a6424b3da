"""ImageClassifier trained with SKD-BNN self-knowledge distillation."""
import copy
from typing import Dict, List, Optional

import torch
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..distill import SelfTeacher, SoftLabelBank, UnitRecorder, flatten_records

#: the paper's losses and weights; a key set to None drops that loss
DEFAULT_DISTILL = dict(
    units=None,
    feat_loss=dict(type='ChannelSpatialDistillLoss', loss_weight=1.0),
    label_loss=dict(type='SoftLabelKLLoss', loss_weight=0.05,
                    temperature=4.0),
    cluster_loss=dict(type='LabelClusterLoss', loss_weight=0.01),
    num_classes=None,
)


@MODELS.register_module()
class SKDImageClassifier(ImageClassifier):
    """Binary classifier trained with the three losses of SKD-BNN.

    ``loss()`` adds to the head's cross-entropy (``loss_cls``):

    - ``loss_feat``: channel/spatial distillation from the network's own
      latent full-precision weights (:class:`SelfTeacher`) on the outputs of
      the binary units, recorded by module name (:class:`UnitRecorder`);
    - ``loss_label``: KL to the soft-label bank (:class:`SoftLabelBank`,
      module ``soft_label_bank``), zero until one epoch has been folded into
      the bank; the bank is filled here and updated at epoch end by
      ``SoftLabelBankHook``;
    - ``loss_cluster``: label-cluster loss on the penultimate feature, i.e.
      ``head.pre_logits(neck output)``, the input of the final linear layer.

    ``predict`` and ``tensor`` modes are :class:`ImageClassifier`'s: no
    teacher pass and no recording.

    Non-finite losses are not checked here, since a check per step would
    force a device-to-host sync; ``SoftLabelBankHook`` checks the values that
    mmengine's logging copies to the host anyway every iteration, and names
    the part that went wrong.

    Args:
        distill (dict): ``units``: list of module names of the backbone whose
            outputs are the binary units' outputs, or one regex matched
            against the backbone's module names (``None``: the backbone's
            ``unit_names()``); ``feat_loss``, ``label_loss``,
            ``cluster_loss``: loss configs, ``None`` to drop one (ablation);
            ``num_classes``: size of the bank, default ``head.num_classes``.
            Missing keys take the paper's values (:data:`DEFAULT_DISTILL`).
        **kwargs: the arguments of :class:`ImageClassifier`.
    """

    def __init__(self, *args, distill: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        cfg = copy.deepcopy(DEFAULT_DISTILL)
        unknown = sorted(set(distill or {}) - set(cfg))
        if unknown:
            raise ValueError(f'Unknown key(s) {unknown} in distill; valid '
                             f'keys: {sorted(cfg)}')
        cfg.update(copy.deepcopy(dict(distill or {})))
        if self.head is None:
            raise ValueError('SKDImageClassifier needs a head.')

        def build(key):
            item = cfg[key]
            return None if item is None else MODELS.build(item)

        self.feat_loss = build('feat_loss')
        self.label_loss = build('label_loss')
        self.cluster_loss = build('cluster_loss')

        self.recorder = self.teacher = None
        if self.feat_loss is not None:
            self.recorder = UnitRecorder(cfg['units'])
            self.unit_names = self.recorder.resolve(self.backbone)
            self.teacher = SelfTeacher()
            if not self.teacher.binary_convs(self.backbone):
                raise ValueError(
                    'feat_loss needs binary convs (IRConv2d) in the backbone '
                    f'{type(self.backbone).__name__}; binarise it (conv_cfg='
                    "dict(type='IRConv2d') or BinarizedBackbone) or set "
                    'distill.feat_loss=None.')
            # hooks registered now, outside any compiled region (idle
            # until loss() activates them)
            self.recorder.attach(self.backbone)
            self.teacher.attach(self.backbone)

        num_classes = cfg['num_classes'] or getattr(self.head, 'num_classes',
                                                    None)
        if num_classes is None and (self.label_loss or self.cluster_loss):
            raise ValueError('Set distill.num_classes: the head has no '
                             'num_classes attribute.')
        self.num_classes = num_classes
        self.soft_label_bank = None
        if self.label_loss is not None:
            self.soft_label_bank = SoftLabelBank(num_classes)
            # Per-process running sums must not be replaced by rank 0's when
            # DDP broadcasts buffers (broadcast_buffers=True); they are
            # summed over processes at epoch end instead.
            self._ddp_params_and_buffers_to_ignore = [
                f'soft_label_bank.{name}'
                for name in SoftLabelBank.local_buffers]

    @staticmethod
    def _hard_labels(data_samples: List[DataSample]) -> torch.Tensor:
        if 'gt_score' in data_samples[0]:
            raise ValueError(
                'SKD-BNN needs hard labels (gt_label): the soft-label bank and '
                'the cluster loss are per class. Remove batch augmentations '
                'such as Mixup/CutMix from train_cfg.')
        return torch.cat([s.gt_label for s in data_samples])

    def loss(self, inputs: torch.Tensor,
             data_samples: List[DataSample]) -> Dict[str, torch.Tensor]:
        labels = self._hard_labels(data_samples).to(inputs.device)
        if self.feat_loss is not None:
            with self.recorder.record(self.backbone) as records, \
                    self.teacher.student_pass(self.backbone):
                feats = self.backbone(inputs)
            student_units = flatten_records(records)
        else:
            feats = self.backbone(inputs)
        if self.with_neck:
            feats = self.neck(feats)
        logits = self.head(feats)

        losses = {}
        head_losses = self.head._get_loss(logits, data_samples)
        losses['loss_cls'] = head_losses.pop('loss')
        losses.update(head_losses)

        if self.feat_loss is not None:
            with torch.no_grad(), \
                    self.recorder.record(self.backbone) as records, \
                    self.teacher.teacher_pass(self.backbone):
                self.backbone(inputs)
            losses['loss_feat'] = self.feat_loss(student_units,
                                                 flatten_records(records))
        if self.label_loss is not None:
            bank = self.soft_label_bank
            losses['loss_label'] = bank.active() * self.label_loss(
                logits, bank.lookup(labels))
            bank.accumulate(logits.detach(), labels)
        if self.cluster_loss is not None:
            pre_logits = self.head.pre_logits(feats)
            losses['loss_cluster'] = self.cluster_loss(
                pre_logits, labels, self.num_classes)
        return losses
