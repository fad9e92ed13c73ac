"""KL estimators between the policy and the reference, the KL penalty folded into rewards, and the KL loss.

Estimators follow Schulman, "Approximating KL Divergence" (2020, http://joschu.net/blog/kl-approx.html).
The adaptive coefficient lives in `kl_control.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

import torch
from torch import Tensor

from rlhf.algorithms.config import KLEstimator
from rlhf.algorithms.core import LOG_RATIO_CLAMP, masked_mean

# Names accepted by `algorithm.kl_penalty` and `algorithm.kl_loss_type`.
KL_ESTIMATORS: tuple[str, ...] = get_args(KLEstimator)

# From verl's `low_var_kl`: the k3 value is clamped so one wildly off-policy token cannot dominate the loss.
_K3_CLAMP = 10.0


def kl_estimate(log_probs: Tensor, ref_log_probs: Tensor, kind: str) -> Tensor:
    """Per-token estimate of KL(policy || ref) from the sampled tokens' log-probs.

    With d = log_probs - ref_log_probs (tokens sampled from the policy):
      k1  = d                                   unbiased, high variance, can be negative
      k2  = 0.5 * d^2                           biased, low variance (verl's "mse")
      k3  = exp(-d) - (-d) - 1                  unbiased, low variance, >= 0 (verl's "low_var_kl");
                                                -d is clamped to [-20, 20] and the result to [-10, 10] as verl does
      abs = |d|

    Args:
        log_probs: [B, T] float32, log pi(y_t) under the current policy.
        ref_log_probs: [B, T] float32, log pi_ref(y_t).
        kind: one of KL_ESTIMATORS.

    Returns:
        [B, T] float32; padding positions are not masked here.

    Raises:
        ValueError: unknown `kind`.
    """
    diff = log_probs - ref_log_probs
    if kind == "k1":
        return diff
    if kind == "k2":
        return 0.5 * diff.square()
    if kind == "k3":
        ref_minus_logp = torch.clamp(-diff, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        k3 = torch.exp(ref_minus_logp) - ref_minus_logp - 1.0
        return torch.clamp(k3, -_K3_CLAMP, _K3_CLAMP)
    if kind == "abs":
        return diff.abs()
    raise ValueError(f"KL estimator {kind!r} is unknown; choose one of {list(KL_ESTIMATORS)}")


def apply_kl_penalty(
    token_level_scores: Tensor,
    log_probs: Tensor,
    ref_log_probs: Tensor,
    response_mask: Tensor,
    kl_coef: float,
    kind: str,
) -> tuple[Tensor, dict[str, float]]:
    """Fold a per-token KL penalty into the rewards: r_t = score_t - kl_coef * KL_t (Ziegler et al. 2019).

    Args:
        token_level_scores: [B, T] float32, rewards from the reward stage (usually only on the last token).
        log_probs: [B, T] float32, the actor's old_log_probs.
        ref_log_probs: [B, T] float32.
        response_mask: [B, T] float 0/1.
        kl_coef: the current coefficient (a KL controller's `.value`).
        kind: KL estimator name (`algorithm.kl_penalty`).

    Returns:
        token_level_rewards: [B, T]; the penalty is zero on padding (scores pass through unchanged there).
        metrics: `actor/reward_kl_penalty` (mean over non-empty sequences of the per-sequence token-mean KL: feed it
        to the controller's `update`) and `actor/reward_kl_penalty_coeff`.
    """
    kl = kl_estimate(log_probs, ref_log_probs, kind) * response_mask  # [B, T]
    token_level_rewards = token_level_scores - kl_coef * kl
    seq_kl = masked_mean(kl, response_mask, dim=-1)  # [B]
    has_tokens = (response_mask.sum(dim=-1) > 0).float()
    current_kl = masked_mean(seq_kl, has_tokens).item()
    metrics = {"actor/reward_kl_penalty": current_kl, "actor/reward_kl_penalty_coeff": float(kl_coef)}
    return token_level_rewards, metrics


def kl_loss(
    log_probs: Tensor,
    ref_log_probs: Tensor,
    response_mask: Tensor,
    kind: str,
    agg: Callable[[Tensor, Tensor], Tensor],
) -> tuple[Tensor, dict[str, Tensor]]:
    """KL(policy || ref) as a loss term (GRPO, Shao et al. 2024, arXiv:2402.03300), aggregated by `agg`.

    The actor adds `kl_loss_coef * loss` to the policy loss when `algorithm.use_kl_loss` is on.

    Returns:
        loss: scalar from `agg(kl [B, T], response_mask)`.
        metrics: `actor/kl_loss` (the aggregated loss, detached).
    """
    kl = kl_estimate(log_probs, ref_log_probs, kind)
    loss = agg(kl, response_mask)
    return loss, {"actor/kl_loss": loss.detach()}
