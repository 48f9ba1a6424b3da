"""Per-class bank of historical logits (SKD-BNN's soft labels)."""
import torch
import torch.nn as nn
from mmpretrain.registry import MODELS


@MODELS.register_module()
class SoftLabelBank(nn.Module):
    """``[C, C]`` bank of mean logits of correctly classified samples.

    During an epoch, :meth:`accumulate` adds the logits of every sample whose
    top-1 prediction is right to its class's running sum and count ("dynamic
    filtering": wrong predictions never enter). :meth:`update`, at epoch end,
    replaces each bank row by sum / count; a class without any correct
    prediction keeps its previous row, so the bank never holds NaN.
    Everything stays on the device: no host sync.

    All state is in persistent buffers, so it is saved in and restored from
    checkpoints (partial sums of an unfinished epoch included):

    - ``bank`` ``[C, C]``: the soft labels (logits) used by the loss;
    - ``sums`` ``[C, C]`` / ``counts`` ``[C]``: the running sums;
    - ``last_counts`` ``[C]``: the counts behind ``bank``;
    - ``num_updates``: completed epochs folded into ``bank``; the label loss
      is off while it is 0 (the paper's ``beta = 0`` in the first epoch);
    - ``last_epoch``: the runner epoch of the last update (-1: none), so a
      hook calling :meth:`update` twice, or after a resume, is harmless.

    The bank knows nothing of processes: with several, ``sums``/``counts``
    hold what this process saw, and
    :class:`~skd_bnn_mm.engine.hooks.SoftLabelBankHook` sums them over the
    processes before :meth:`update` and in mid-epoch checkpoints.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if not (isinstance(num_classes, int) and num_classes >= 2):
            raise ValueError(
                f'SoftLabelBank needs num_classes >= 2, got {num_classes!r}')
        self.num_classes = num_classes
        c = num_classes
        self.register_buffer('bank', torch.zeros(c, c))
        self.register_buffer('sums', torch.zeros(c, c))
        self.register_buffer('counts', torch.zeros(c, dtype=torch.long))
        self.register_buffer('last_counts', torch.zeros(c, dtype=torch.long))
        self.register_buffer('num_updates', torch.zeros((), dtype=torch.long))
        self.register_buffer('last_epoch', torch.full((), -1,
                                                      dtype=torch.long))

    def active(self) -> torch.Tensor:
        """0-dim float, 1 once the bank holds at least one epoch, else 0.

        A tensor rather than a bool so that gating the loss costs no sync.
        """
        return (self.num_updates > 0).to(self.bank.dtype)

    def lookup(self, labels: torch.Tensor) -> torch.Tensor:
        """Bank rows of ``labels``: ``[B, C]`` soft-label logits."""
        return self.bank.index_select(0, labels)

    @torch.no_grad()
    def accumulate(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add the logits of the correctly classified samples of a batch."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f'SoftLabelBank({self.num_classes}) expects logits of shape '
                f'[B, {self.num_classes}], got {tuple(logits.shape)}')
        logits = logits.detach().to(self.sums.dtype)
        correct = logits.argmax(dim=1) == labels
        self.sums.index_add_(
            0, labels, torch.where(correct[:, None], logits,
                                   torch.zeros_like(logits)))
        self.counts.index_add_(0, labels, correct.to(self.counts.dtype))

    @torch.no_grad()
    def update(self, epoch: int = -1) -> None:
        """Fold the running sums into the bank and start new ones.

        Args:
            epoch: the runner epoch that just finished, stored in
                ``last_epoch``.
        """
        seen = self.counts > 0
        mean = self.sums / self.counts.clamp_min(1).to(self.sums.dtype)[:, None]
        self.bank.copy_(torch.where(seen[:, None], mean, self.bank))
        self.last_counts.copy_(self.counts)
        self.sums.zero_()
        self.counts.zero_()
        self.num_updates += 1
        self.last_epoch.fill_(epoch)

    def extra_repr(self) -> str:
        return f'num_classes={self.num_classes}'
