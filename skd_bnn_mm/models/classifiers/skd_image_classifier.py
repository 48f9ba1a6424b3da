"""ImageClassifier trained with SKD-BNN self-knowledge distillation."""
import copy
from typing import Dict, List, Optional

import torch
from mmpretrain.models import ImageClassifier, LinearClsHead
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..distill import (OutputRecorder, SelfTeacher, SoftLabelBank,
                       flatten_records, resolve_units)

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

    ``loss()`` (docs/skd_bnn.md) adds to the head's cross-entropy
    (``loss_cls``):

    - ``loss_feat``: channel/spatial distillation from the network's own
      latent full-precision weights (:class:`SelfTeacher`, a twin of the
      backbone sharing its parameters) on the outputs of the binary units,
      recorded by module name (:class:`OutputRecorder`);
    - ``loss_label``: KL to the soft-label bank (:class:`SoftLabelBank`,
      module ``soft_label_bank``), zero until one epoch has been folded into
      the bank; the bank is filled here and updated at epoch end by
      ``SoftLabelBankHook``;
    - ``loss_cluster``: label-cluster loss on the penultimate feature
      ``pre_logits``, the input of the head's final linear layer.

    The head must be a :class:`LinearClsHead` (logits are
    ``head.fc(pre_logits)``, so ``pre_logits`` is computed once).
    ``predict`` and ``tensor`` modes are :class:`ImageClassifier`'s: no
    teacher pass and no recording. Non-finite losses are not checked here
    (a check per step would force a device-to-host sync).

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
        if not isinstance(self.head, LinearClsHead):
            raise ValueError(
                'SKDImageClassifier needs a LinearClsHead (logits = '
                'head.fc(head.pre_logits(feats))), got '
                f'{type(self.head).__name__}.')
        if self.head.cal_acc:
            raise ValueError('SKDImageClassifier reports no training '
                             'accuracy; set head.cal_acc=False.')

        def build(key):
            item = cfg[key]
            return None if item is None else MODELS.build(item)

        self.feat_loss = build('feat_loss')
        self.label_loss = build('label_loss')
        self.cluster_loss = build('cluster_loss')

        self.recorder = self.teacher = None
        if self.feat_loss is not None:
            self.unit_names = resolve_units(self.backbone, cfg['units'])
            self._build_teacher()

        num_classes = cfg['num_classes'] or self.head.num_classes
        self.num_classes = num_classes
        self.soft_label_bank = None
        if self.label_loss is not None:
            self.soft_label_bank = SoftLabelBank(num_classes)
            # DDP reads this when wrapping (before any hook exists): with
            # broadcast_buffers=True it would replace each process's running
            # sums by rank 0's. SoftLabelBankHook sums them over processes.
            self._ddp_params_and_buffers_to_ignore = [
                'soft_label_bank.sums', 'soft_label_bank.counts']

    def _build_teacher(self) -> None:
        """The teacher twin, and one recorder of the units and of the binary
        convs' outputs (which the teacher needs), hooked once now: outside
        any compiled region."""
        try:
            self.teacher = SelfTeacher(self.backbone)
        except ValueError:
            raise ValueError(
                'feat_loss needs binary convs (IRConv2d) in the backbone '
                f'{type(self.backbone).__name__}; binarise it (conv_cfg='
                "dict(type='IRConv2d') or BinarizedBackbone) or set "
                'distill.feat_loss=None.') from None
        self.recorder = OutputRecorder(
            self.backbone, self.unit_names + self.teacher.conv_names)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            if not self.teacher.mirrors(self.backbone):
                # modules replaced since (SyncBN conversion): mirror them
                self.recorder.remove()
                self._build_teacher()
            self.teacher.train(mode)
        return self

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
        # student pass, the binary convs' outputs and the units recorded
        if self.teacher is None:
            pre_logits = self.extract_feat(inputs, stage='pre_logits')
        else:
            with self.recorder.record() as student:
                pre_logits = self.extract_feat(inputs, stage='pre_logits')
        logits = self.head.fc(pre_logits)
        losses = dict(loss_cls=self.head.loss_module(
            logits, labels, avg_factor=logits.size(0)))

        if self.teacher is not None:
            # teacher pass: the twin, with the student's conv outputs
            with torch.no_grad(), self.recorder.record() as teacher:
                self.teacher(inputs, student)
            losses['loss_feat'] = self.feat_loss(
                flatten_records(student, self.unit_names),
                flatten_records(teacher, self.unit_names))
        if self.label_loss is not None:
            bank = self.soft_label_bank
            losses['loss_label'] = bank.active() * self.label_loss(
                logits, bank.lookup(labels))
            bank.accumulate(logits.detach(), labels)
        if self.cluster_loss is not None:
            losses['loss_cluster'] = self.cluster_loss(
                pre_logits, labels, self.num_classes)
        return losses
