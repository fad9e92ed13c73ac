"""Truncated importance sampling between the trainer's policy and the rollout engine's sampling distribution.

vLLM samples with its own kernels (and precision), so its token probabilities differ slightly from the trainer's
even with identical weights. TIS (Yao et al., "Your Efficient RL Framework Secretly Brings You Off-Policy RL
Training", 2025, https://fengyao.notion.site/off-policy-rl) reweights by min(pi_trainer / pi_rollout, C).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rlhf.algorithms.core import masked_mean, masked_sum


def rollout_importance_weights(
    old_log_probs: Tensor,
    rollout_log_probs: Tensor,
    response_mask: Tensor,
    level: str,
    threshold: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Truncated IS weights w = min(pi_old / pi_rollout, threshold), detached.

    level "token": one ratio per token, exp(old_log_probs - rollout_log_probs).
    level "sequence": one ratio per response, exp(sum_t (old - rollout)) (the product of the token ratios),
    broadcast to its tokens; the log is capped at log(threshold) before exp() so it cannot overflow.

    How to apply: pass `advantages * weights` as the advantages of the policy loss. For ppo, gspo and cispo this
    is the same as multiplying their per-token loss matrix by the weights, because each loss is positively
    homogeneous in the advantage and the weights are > 0.

    Args:
        old_log_probs: [B, T] float32 trainer log-probs of the sampled tokens (before the update).
        rollout_log_probs: [B, T] float32 log-probs reported by the rollout engine.
        response_mask: [B, T] float 0/1.
        level: "token" | "sequence" (`algorithm.rollout_is`).
        threshold: truncation C > 0 (`algorithm.rollout_is_threshold`).

    Returns:
        weights: [B, T] float32, detached, zero on padding.
        metrics: rollout_corr/is_weight_mean, _max, _min (of the truncated weights over masked tokens for "token",
        over non-empty sequences for "sequence") and rollout_corr/clipped_frac (fraction truncated).
    """
    if threshold <= 0:
        raise ValueError(f"algorithm.rollout_is_threshold={threshold} must be > 0")
    log_ratio = (old_log_probs - rollout_log_probs).detach()
    if level == "token":
        log_weights, unit_mask = log_ratio, response_mask  # [B, T]
    elif level == "sequence":
        log_weights = masked_sum(log_ratio, response_mask, dim=-1)  # [B]
        unit_mask = (response_mask.sum(dim=-1) > 0).float()
    else:
        raise ValueError(f"algorithm.rollout_is={level!r} is not valid; choose one of [None, 'token', 'sequence']")

    log_threshold = math.log(threshold)
    is_clipped = log_weights > log_threshold
    weights = torch.exp(torch.clamp(log_weights, max=log_threshold))
    metrics = _weight_metrics(weights, unit_mask, is_clipped)
    if level == "sequence":
        weights = weights.unsqueeze(-1)
    return weights * response_mask, metrics


def _weight_metrics(weights: Tensor, unit_mask: Tensor, is_clipped: Tensor) -> dict[str, Tensor]:
    has_units = unit_mask.sum() > 0
    selected = weights[unit_mask > 0]
    zero = weights.new_zeros(())
    return {
        "rollout_corr/is_weight_mean": masked_mean(weights, unit_mask),
        "rollout_corr/is_weight_max": selected.max() if has_units else zero,
        "rollout_corr/is_weight_min": selected.min() if has_units else zero,
        "rollout_corr/clipped_frac": masked_mean(is_clipped.float(), unit_mask),
    }
