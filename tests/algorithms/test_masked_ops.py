"""rlhf.algorithms.core: masked reductions against hand-computed values."""

import torch

from rlhf.algorithms import masked_mean, masked_var, masked_whiten


def test_masked_mean_ignores_padding_and_empty_mask_gives_zero():
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    # (1 + 2) / 2
    assert masked_mean(values, torch.tensor([[1.0, 1.0, 0.0, 0.0]])).item() == 1.5
    assert masked_mean(values, torch.zeros(1, 4)).item() == 0.0
    # per row along dim=-1: row 0 -> (1 + 2) / 2, row 1 (empty) -> 0
    rows = masked_mean(values.repeat(2, 1), torch.tensor([[1.0, 1, 0, 0], [0, 0, 0, 0]]), dim=-1)
    torch.testing.assert_close(rows, torch.tensor([1.5, 0.0]))


def test_masked_var_unbiased_biased_and_degenerate():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    # mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5 -> 5 / 3 unbiased, 5 / 4 biased
    torch.testing.assert_close(masked_var(values, mask), torch.tensor(5.0 / 3.0))
    torch.testing.assert_close(masked_var(values, mask, unbiased=False), torch.tensor(1.25))
    # one point or none: no spread, and no NaN
    assert masked_var(values, torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])).item() == 0.0
    assert masked_var(values, torch.zeros(5)).item() == 0.0


def test_masked_whiten():
    values = torch.tensor([1.0, 2.0, 3.0, 50.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    # mean 2, unbiased var (1 + 0 + 1) / 2 = 1 -> [-1, 0, 1] on the masked positions
    whitened = masked_whiten(values, mask)
    torch.testing.assert_close(whitened[:3], torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(masked_whiten(values, mask, shift_mean=False)[:3], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.isfinite(masked_whiten(values, torch.zeros(4))).all()
