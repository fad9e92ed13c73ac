"""rlhf.algorithms.aggregation: hand-computed modes, and exact micro-batch / rank invariance of value and gradient."""

import pytest
import torch

from rlhf.algorithms import LOSS_AGG_MODES, aggregate_loss, aggregation_counts, make_loss_aggregator

NORM_LENGTH = 6


def test_modes_hand_computed_and_empty_rows_do_not_count():
    loss_mat = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # lengths 3, 1, 0 (empty)
    # row sums 6, 4; 4 tokens; 2 non-empty rows
    expected = {
        "token-mean": (6 + 4) / 4,
        "seq-mean-token-sum": (6 + 4) / 2,
        "seq-mean-token-mean": (6 / 3 + 4 / 1) / 2,
        "seq-mean-token-sum-norm": (6 / 3 + 4 / 3) / 2,  # norm_length 3
    }
    for mode, value in expected.items():
        result = aggregate_loss(loss_mat, mask, mode, norm_length=3)
        torch.testing.assert_close(result, torch.tensor(value), msg=mode)
    assert aggregation_counts(mask) == (4.0, 2.0)


def test_all_masked_gives_zero_with_gradient():
    loss_mat = torch.ones(2, 3, requires_grad=True)
    for mode in LOSS_AGG_MODES:
        result = aggregate_loss(loss_mat, torch.zeros(2, 3), mode, norm_length=3)
        assert result.item() == 0.0
        result.backward()
    assert torch.all(loss_mat.grad == 0)


def test_global_counts_with_zero_count():
    loss_mat = torch.ones(1, 2)
    assert aggregate_loss(loss_mat, torch.zeros(1, 2), "token-mean", global_num_tokens=0.0).item() == 0.0


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("num_micro_batches", [1, 2, 4])
def test_micro_batch_sum_equals_full_batch(mode, num_micro_batches):
    """Summing micro-batch losses computed with global counts gives the full-batch loss and gradient exactly."""
    torch.manual_seed(0)
    batch, num_tokens = 8, 5
    lengths = torch.tensor([5, 1, 3, 0, 5, 2, 4, 5])  # mixed lengths and one empty response
    mask = (torch.arange(num_tokens)[None, :] < lengths[:, None]).float()
    x = torch.randn(batch, num_tokens, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(batch, num_tokens, dtype=torch.float64)

    def loss_mat_of(x_part, w_part):  # a nonlinear per-token loss so the gradient depends on x
        return w_part * x_part**2 + torch.sin(x_part)

    full = aggregate_loss(loss_mat_of(x, weights), mask, mode, norm_length=NORM_LENGTH)
    (full_grad,) = torch.autograd.grad(full, x)

    # each "rank" / micro-batch would all-reduce these counts; here they are summed directly
    counts = [aggregation_counts(m) for m in mask.chunk(num_micro_batches)]
    global_tokens, global_seqs = sum(c[0] for c in counts), sum(c[1] for c in counts)
    agg = make_loss_aggregator(
        mode, global_num_tokens=global_tokens, global_num_seqs=global_seqs, norm_length=NORM_LENGTH
    )
    total = sum(
        agg(loss_mat_of(x_part, w_part), m_part)
        for x_part, w_part, m_part in zip(
            x.chunk(num_micro_batches), weights.chunk(num_micro_batches), mask.chunk(num_micro_batches), strict=True
        )
    )
    (split_grad,) = torch.autograd.grad(total, x)
    torch.testing.assert_close(total, full)
    torch.testing.assert_close(split_grad, full_grad)


def test_local_counts_are_a_plain_mean_per_micro_batch():
    loss_mat, mask = torch.tensor([[2.0, 4.0]]), torch.ones(1, 2)
    assert aggregate_loss(loss_mat, mask, "token-mean").item() == 3.0


def test_bad_mode_and_missing_norm_length():
    with pytest.raises(ValueError, match="algorithm.loss_agg_mode='bogus'"):
        aggregate_loss(torch.ones(1, 1), torch.ones(1, 1), "bogus")
    with pytest.raises(ValueError, match="algorithm.loss_agg_mode='bogus'"):
        make_loss_aggregator("bogus")
    with pytest.raises(ValueError, match="norm_length"):
        aggregate_loss(torch.ones(1, 1), torch.ones(1, 1), "seq-mean-token-sum-norm")
