"""The critic's clipped value loss (PPO value clipping)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rlhf.algorithms.core import masked_mean


def compute_value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    response_mask: Tensor,
    cliprange_value: float,
    agg: Callable[[Tensor, Tensor], Tensor],
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss: 0.5 * agg(max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2)).

    The clipped form (Schulman et al. 2017, PPO baselines; discussed in Engstrom et al. 2020, arXiv:2005.12729)
    stops one update from moving a value far from the one the advantages were computed with.

    Args:
        values: [B, T] float32 current critic predictions (differentiable).
        old_values: [B, T] float32 predictions at rollout time.
        returns: [B, T] float32 targets from the advantage estimator.
        response_mask: [B, T] float 0/1.
        cliprange_value: c, `algorithm.cliprange_value`.
        agg: aggregation closure (`make_loss_aggregator`).

    Returns:
        loss: scalar.
        metrics: critic/vf_loss, critic/vf_clipfrac (fraction of tokens where the clipped error is larger),
        critic/vpred_mean.
    """
    values_clipped = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    loss_unclipped = (values - returns).square()
    loss_clipped = (values_clipped - returns).square()
    loss = 0.5 * agg(torch.maximum(loss_unclipped, loss_clipped), response_mask)
    metrics = {
        "critic/vf_loss": loss.detach(),
        "critic/vf_clipfrac": masked_mean((loss_clipped > loss_unclipped).float(), response_mask).detach(),
        "critic/vpred_mean": masked_mean(values, response_mask).detach(),
    }
    return loss, metrics
