"""Reducing a per-token loss matrix to the scalar that is backpropagated, exactly across micro-batches and ranks.

The contract (the actor relies on it): pass the token / sequence counts of the WHOLE mini-batch (all micro-batches
on all data-parallel ranks) and SUM the per-micro-batch results; the sum equals the full-batch loss, and so do the
gradients. Data-parallel gradient averaging must then be undone (multiply by the world size) or replaced by a sum.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import get_args

from torch import Tensor

from rlhf.algorithms.config import LossAggMode

# Names accepted by `algorithm.loss_agg_mode`.
LOSS_AGG_MODES: tuple[str, ...] = get_args(LossAggMode)


def aggregation_counts(mask: Tensor) -> tuple[float, float]:
    """The (num_tokens, num_seqs) a micro-batch contributes to the global counts.

    num_seqs counts only rows with at least one response token: an empty response adds nothing to any mode's
    numerator, so it does not dilute the mean either. Sum these over micro-batches and all-reduce over ranks.
    """
    return float(mask.sum().item()), float((mask.sum(dim=-1) > 0).sum().item())


def aggregate_loss(
    loss_mat: Tensor,
    mask: Tensor,
    mode: str,
    *,
    global_num_tokens: float | None = None,
    global_num_seqs: float | None = None,
    norm_length: int | None = None,
) -> Tensor:
    """Aggregate a [B, T] loss over the response tokens into a scalar.

    Modes (L_i = number of response tokens in row i, N = number of non-empty rows):
      token-mean               sum_{i,t} loss / sum_i L_i                 (DAPO, Yu et al. 2025, arXiv:2503.14476)
      seq-mean-token-sum       sum_i (sum_t loss) / N
      seq-mean-token-mean      sum_i (sum_t loss / L_i) / N              (GRPO as written, arXiv:2402.03300)
      seq-mean-token-sum-norm  sum_i (sum_t loss / norm_length) / N      (Dr.GRPO, Liu et al. 2025,
                                                                          arXiv:2503.20783; norm_length is the max
                                                                          response length, a constant; verl omits
                                                                          the / N, a constant factor)

    Global normalisation contract: the denominators (sum_i L_i, N) are `global_num_tokens` / `global_num_seqs` when
    given: the counts of the whole mini-batch over all micro-batches and all data-parallel ranks (see
    `aggregation_counts`). The function then returns this micro-batch's numerator divided by the global count, so the
    per-micro-batch results must be SUMMED (not averaged) during gradient accumulation, and summed over ranks: the
    total equals the full-batch loss exactly, and so does its gradient. With the counts left as None the local counts
    are used, i.e. a plain mean over this micro-batch. A count of 0 (everything masked) gives a loss of 0 that still
    carries a (zero) gradient.

    Args:
        loss_mat: [B, T] float32 per-token loss.
        mask: [B, T] float 0/1 response mask.
        mode: one of LOSS_AGG_MODES.
        global_num_tokens: token count of the whole mini-batch, used by token-mean.
        global_num_seqs: non-empty sequence count of the whole mini-batch, used by the seq-mean-* modes.
        norm_length: constant divisor for seq-mean-token-sum-norm (required there).

    Returns:
        0-d tensor.

    Raises:
        ValueError: unknown mode, or seq-mean-token-sum-norm without a positive `norm_length`.
    """
    masked = loss_mat * mask  # [B, T]
    if mode == "token-mean":
        if global_num_tokens is None:
            return masked.sum() / mask.sum().clamp(min=1.0)
        return masked.sum() / max(float(global_num_tokens), 1.0)

    seq_lengths = mask.sum(dim=-1)  # [B]
    if mode == "seq-mean-token-sum":
        seq_losses = masked.sum(dim=-1)
    elif mode == "seq-mean-token-mean":
        seq_losses = masked.sum(dim=-1) / seq_lengths.clamp(min=1.0)
    elif mode == "seq-mean-token-sum-norm":
        if norm_length is None or norm_length <= 0:
            raise ValueError(f"loss_agg_mode 'seq-mean-token-sum-norm' needs norm_length > 0, got {norm_length}")
        seq_losses = masked.sum(dim=-1) / norm_length
    else:
        raise ValueError(f"algorithm.loss_agg_mode={mode!r} is unknown; choose one of {list(LOSS_AGG_MODES)}")
    if global_num_seqs is None:
        return seq_losses.sum() / (seq_lengths > 0).sum().clamp(min=1).to(loss_mat.dtype)
    return seq_losses.sum() / max(float(global_num_seqs), 1.0)


def make_loss_aggregator(
    mode: str,
    *,
    global_num_tokens: float | None = None,
    global_num_seqs: float | None = None,
    norm_length: int | None = None,
) -> Callable[[Tensor, Tensor], Tensor]:
    """The `agg(loss_mat, mask) -> scalar` closure the policy / value / KL losses take (see `aggregate_loss`)."""
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"algorithm.loss_agg_mode={mode!r} is unknown; choose one of {list(LOSS_AGG_MODES)}")
    return partial(
        aggregate_loss,
        mode=mode,
        global_num_tokens=global_num_tokens,
        global_num_seqs=global_num_seqs,
        norm_length=norm_length,
    )
