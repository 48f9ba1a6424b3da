"""Soft-label bank: filtering, update, checkpoints (its hook:
tests/engine/hooks/test_soft_label_bank_hook.py)."""
import pytest
import torch

from skd_bnn_mm.models.distill import SoftLabelBank


def _logits():
    # argmax per row: 0, 1, 2, 0, 2
    return torch.tensor([[3.0, 1.0, 0.0],
                         [0.0, 2.0, 1.0],
                         [1.0, 0.0, 4.0],
                         [5.0, 1.0, 1.0],
                         [0.0, 1.0, 2.0]])


def test_accumulate_keeps_only_correct_predictions():
    bank = SoftLabelBank(3)
    labels = torch.tensor([0, 1, 1, 0, 2])  # sample 2 is wrong (pred 2)
    bank.accumulate(_logits(), labels)
    logits = _logits()
    torch.testing.assert_close(
        bank.sums, torch.stack([logits[0] + logits[3], logits[1], logits[4]]))
    assert bank.counts.tolist() == [2, 1, 1]
    assert bank.num_updates == 0 and float(bank.active()) == 0.0


def test_update_divides_and_keeps_rows_of_unseen_classes():
    bank = SoftLabelBank(3)
    logits = _logits()
    bank.accumulate(logits, torch.tensor([0, 1, 1, 0, 2]))
    bank.update(epoch=0)
    expected = torch.stack([(logits[0] + logits[3]) / 2, logits[1], logits[4]])
    torch.testing.assert_close(bank.bank, expected)
    assert bank.sums.abs().sum() == 0 and bank.counts.sum() == 0
    assert bank.last_counts.tolist() == [2, 1, 1]
    assert int(bank.num_updates) == 1 and int(bank.last_epoch) == 0
    assert float(bank.active()) == 1.0
    # epoch 2: every class-1 sample wrong, class 0 new values
    new = torch.tensor([[7.0, 0.0, 1.0], [0.0, 0.0, 9.0]])
    bank.accumulate(new, torch.tensor([0, 1]))
    bank.update(epoch=1)
    assert torch.equal(bank.bank[0], new[0])
    assert torch.equal(bank.bank[1], expected[1])  # kept, not NaN
    assert torch.equal(bank.bank[2], expected[2])
    assert torch.isfinite(bank.bank).all()
    assert bank.last_counts.tolist() == [1, 0, 0]
    assert torch.equal(bank.lookup(torch.tensor([2, 0])),
                       torch.stack([expected[2], new[0]]))


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    bank = SoftLabelBank(4)
    for epoch in range(2):
        bank.accumulate(torch.randn(16, 4), torch.randint(0, 4, (16, )))
        bank.update(epoch)
    bank.accumulate(torch.randn(16, 4), torch.randint(0, 4, (16, )))  # mid
    assert bank.counts.sum() > 0
    path = tmp_path / 'bank.pth'
    torch.save({'state_dict': bank.state_dict()}, path)
    state = torch.load(path, weights_only=True)['state_dict']
    assert set(state) == {'bank', 'sums', 'counts', 'last_counts',
                          'num_updates', 'last_epoch'}
    fresh = SoftLabelBank(4)
    fresh.load_state_dict(state)
    for name, value in bank.state_dict().items():
        assert torch.equal(getattr(fresh, name), value), name
        assert getattr(fresh, name).dtype == value.dtype


def test_invalid_arguments():
    with pytest.raises(ValueError, match='num_classes >= 2'):
        SoftLabelBank(1)
    with pytest.raises(ValueError, match=r'\[B, 3\]'):
        SoftLabelBank(3).accumulate(torch.zeros(2, 4), torch.zeros(2).long())


def test_fp16_logits_are_summed_in_float32_over_an_epoch():
    """fp16 autocast gives fp16 logits. The bank sums them in float32 (and
    counts in int64): after an "epoch" of 60 batches of 200 samples the
    sums are the exact sums of the fp16 values to float32 rounding, where
    fp16 sums overflow (65504 is fp16's maximum) and, before that, round
    every addition to 11 significant bits."""
    g = torch.Generator().manual_seed(0)
    bank = SoftLabelBank(3)
    naive = torch.zeros(3, 3, dtype=torch.float16)
    exact = torch.zeros(3, 3, dtype=torch.float64)
    labels = torch.zeros(200, dtype=torch.long)  # all class 0, all correct
    for _ in range(60):
        logits = (torch.tensor([9.0, 1.0, -2.0]) + 0.3 * torch.randn(
            200, 3, generator=g)).half()
        bank.accumulate(logits, labels)
        naive.index_add_(0, labels, logits)
        exact[0] += logits.double().sum(0)
    assert bank.sums.dtype == torch.float32
    assert bank.counts.dtype == torch.int64 and bank.counts[0] == 12000
    torch.testing.assert_close(bank.sums.double(), exact, rtol=1e-5, atol=0)
    assert torch.isinf(naive[0, 0])  # the test can tell
    bank.update(epoch=0)
    torch.testing.assert_close(bank.bank[0].double(), exact[0] / 12000,
                               rtol=1e-5, atol=0)
