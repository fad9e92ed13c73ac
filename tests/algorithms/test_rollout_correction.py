"""rlhf.algorithms.rollout_correction: truncated IS weights at token and sequence level."""

import math

import pytest
import torch

from rlhf.algorithms import rollout_importance_weights


def test_token_level_truncation():
    # ratios pi_old / pi_rollout = [1.5, 3.0, 0.5, (padding) 10] -> truncated at 2: [1.5, 2.0, 0.5, 0]
    old = torch.log(torch.tensor([[1.5, 3.0, 0.5, 10.0]])).requires_grad_(True)
    rollout = torch.zeros(1, 4)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    weights, metrics = rollout_importance_weights(old, rollout, mask, "token", 2.0)
    torch.testing.assert_close(weights, torch.tensor([[1.5, 2.0, 0.5, 0.0]]))
    assert not weights.requires_grad
    torch.testing.assert_close(metrics["rollout_corr/is_weight_mean"], torch.tensor(4.0 / 3.0))
    assert metrics["rollout_corr/is_weight_max"].item() == pytest.approx(2.0)
    assert metrics["rollout_corr/is_weight_min"].item() == pytest.approx(0.5)
    torch.testing.assert_close(metrics["rollout_corr/clipped_frac"], torch.tensor(1 / 3))


def test_sequence_level_product_of_ratios():
    old = torch.log(torch.tensor([[1.5, 1.5, 1.0], [0.5, 1.2, 10.0], [1.0, 1.0, 1.0]]))
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # the last row is empty
    weights, metrics = rollout_importance_weights(old, torch.zeros(3, 3), mask, "sequence", 2.0)
    # row 0: 1.5 * 1.5 = 2.25 -> 2; row 1: 0.5 * 1.2 = 0.6 (padding's 10 ignored); empty row -> 0
    torch.testing.assert_close(weights, torch.tensor([[2.0, 2.0, 0.0], [0.6, 0.6, 0.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(metrics["rollout_corr/is_weight_mean"], torch.tensor(1.3))  # (2 + 0.6) / 2
    torch.testing.assert_close(metrics["rollout_corr/clipped_frac"], torch.tensor(0.5))


def test_huge_sequence_ratio_does_not_overflow():
    old = torch.full((1, 100), 5.0)  # log ratio 500 -> exp would be inf
    weights, _ = rollout_importance_weights(old, torch.zeros(1, 100), torch.ones(1, 100), "sequence", 2.0)
    assert torch.all(weights == 2.0)
    weights, _ = rollout_importance_weights(-old, torch.zeros(1, 100), torch.ones(1, 100), "sequence", 2.0)
    assert torch.all(weights == 0.0) and not math.isnan(weights.sum().item())


def test_bad_level():
    with pytest.raises(ValueError, match="algorithm.rollout_is='geometric'"):
        rollout_importance_weights(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), "geometric", 2.0)
