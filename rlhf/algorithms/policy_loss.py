"""Policy-gradient losses behind `algorithm.policy_loss`, one registry with one signature, plus the entropy term.

    fn(old_log_probs, log_probs, advantages, response_mask, cfg, agg) -> (loss, metrics)

All tensors are [B, T] float32 over response tokens; `agg(loss_mat, mask)` is the aggregation closure built by
the caller (`make_loss_aggregator`), so global normalisation lives in one place. Metrics are detached 0-d tensors
averaged over this micro-batch's tokens. For rollout importance sampling pass `advantages * is_weights` (see
`rollout_correction.py`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rlhf.algorithms.config import AlgorithmConfig
from rlhf.algorithms.core import LOG_RATIO_CLAMP, masked_mean, masked_sum
from rlhf.algorithms.registry import POLICY_LOSSES

Aggregator = Callable[[Tensor, Tensor], Tensor]
PolicyLossFn = Callable[[Tensor, Tensor, Tensor, Tensor, AlgorithmConfig, Aggregator], tuple[Tensor, dict[str, Tensor]]]


def register_policy_loss(name: str, *, override: bool = False) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Decorator registering a policy loss under `name` (the value of `algorithm.policy_loss`)."""
    return POLICY_LOSSES.register(name, override=override)


def get_policy_loss_fn(name: str) -> PolicyLossFn:
    """The policy loss registered as `name`; ValueError listing the choices otherwise."""
    return POLICY_LOSSES.lookup(name)


def _ppo_kl(old_log_probs: Tensor, log_probs: Tensor, response_mask: Tensor) -> Tensor:
    """Mean over tokens of old - new log-prob: the k1 estimate of KL(old || new) (`actor/ppo_kl`)."""
    return masked_mean(old_log_probs - log_probs, response_mask).detach()


@register_policy_loss("ppo")
def ppo_policy_loss(
    old_log_probs: Tensor,
    log_probs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    cfg: AlgorithmConfig,
    agg: Aggregator,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate (Schulman et al., 2017, arXiv:1707.06347) with asymmetric and dual clipping.

    r = exp(log_probs - old_log_probs);  l = max(-A * r, -A * clip(r, 1 - clip_ratio_low, 1 + clip_ratio_high));
    for A < 0 the dual clip (Ye et al., "Mastering Complex Control in MOBA Games", 2020, arXiv:1912.09729) caps it:
    l = min(l, -A * clip_ratio_c), so a huge ratio on a bad token cannot blow up the update (disabled when
    clip_ratio_c == 0). clip_ratio_high > clip_ratio_low is DAPO's clip-higher (arXiv:2503.14476).

    Returns:
        loss: agg(l, response_mask).
        metrics: actor/pg_clipfrac (fraction of tokens where the clipped term is active), actor/ppo_kl,
        actor/pg_clipfrac_lower (fraction where the dual clip is active).
    """
    log_ratio = torch.clamp(log_probs - old_log_probs, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)  # [B, T]
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * torch.clamp(ratio, 1.0 - cfg.clip_ratio_low, 1.0 + cfg.clip_ratio_high)
    loss_mat = torch.maximum(loss_unclipped, loss_clipped)
    clipfrac = masked_mean((loss_clipped > loss_unclipped).float(), response_mask)

    clipfrac_lower = torch.zeros_like(clipfrac)
    if cfg.clip_ratio_c > 0:
        loss_dual = -advantages * cfg.clip_ratio_c
        is_dual_clipped = (advantages < 0) & (loss_mat > loss_dual)
        loss_mat = torch.where(advantages < 0, torch.minimum(loss_mat, loss_dual), loss_mat)
        clipfrac_lower = masked_mean(is_dual_clipped.float(), response_mask)

    metrics = {
        "actor/pg_clipfrac": clipfrac.detach(),
        "actor/ppo_kl": _ppo_kl(old_log_probs, log_probs, response_mask),
        "actor/pg_clipfrac_lower": clipfrac_lower.detach(),
    }
    return agg(loss_mat, response_mask), metrics


@register_policy_loss("gspo")
def gspo_policy_loss(
    old_log_probs: Tensor,
    log_probs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    cfg: AlgorithmConfig,
    agg: Aggregator,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GSPO, sequence-level clipping (Zheng et al., "Group Sequence Policy Optimization", 2025, arXiv:2507.18071).

    s_i = exp(mean_t (log_probs - old_log_probs)) over the response tokens, used in the GSPO-token form
    s_{i,t} = sg[s_i] * pi(y_t) / sg[pi(y_t)]: its value is s_i, its gradient s_i * grad log pi(y_t). Then the PPO
    max with clip(s_{i,t}, 1 - gspo_clip_ratio_low, 1 + gspo_clip_ratio_high) (paper: 3e-4 / 4e-4), per token with
    the per-token advantages. Uses only cfg.gspo_clip_ratio_low/high (not clip_ratio_*, no dual clip). The paper
    averages tokens per sequence, then sequences: `loss_agg_mode=seq-mean-token-mean`.

    Returns:
        loss, metrics (actor/pg_clipfrac, actor/ppo_kl, actor/pg_clipfrac_lower = 0).
    """
    log_ratio = log_probs - old_log_probs
    seq_log_ratio = masked_sum(log_ratio, response_mask, dim=-1) / response_mask.sum(dim=-1).clamp(min=1.0)  # [B]
    # Same value as seq_log_ratio on every token; gradient flows through log_probs token by token.
    token_log_ratio = log_probs - log_probs.detach() + seq_log_ratio.detach().unsqueeze(-1)  # [B, T]
    ratio = torch.exp(torch.clamp(token_log_ratio, max=LOG_RATIO_CLAMP))
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * torch.clamp(ratio, 1.0 - cfg.gspo_clip_ratio_low, 1.0 + cfg.gspo_clip_ratio_high)
    loss_mat = torch.maximum(loss_unclipped, loss_clipped)
    clipfrac = masked_mean((loss_clipped > loss_unclipped).float(), response_mask)
    metrics = {
        "actor/pg_clipfrac": clipfrac.detach(),
        "actor/ppo_kl": _ppo_kl(old_log_probs, log_probs, response_mask),
        "actor/pg_clipfrac_lower": torch.zeros_like(clipfrac),
    }
    return agg(loss_mat, response_mask), metrics


@register_policy_loss("cispo")
def cispo_policy_loss(
    old_log_probs: Tensor,
    log_probs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    cfg: AlgorithmConfig,
    agg: Aggregator,
) -> tuple[Tensor, dict[str, Tensor]]:
    """CISPO (MiniMax, "MiniMax-M1: Scaling Test-Time Compute Efficiently with Lightning Attention", 2025,
    arXiv:2506.13585): clip the importance weight, not the update.

    l = -sg(clip(r, 1 - cispo_clip_ratio_low, 1 + cispo_clip_ratio_high)) * A * log_probs. Every token keeps a
    gradient (sg(w) * A * grad log pi), unlike PPO where clipped tokens get none. The loss VALUE contains log_probs
    and is not comparable with PPO's; only its gradient matters.

    Returns:
        loss, metrics (actor/pg_clipfrac = fraction of truncated weights, actor/ppo_kl, actor/pg_clipfrac_lower =
        fraction truncated from below).
    """
    ratio = torch.exp(torch.clamp(log_probs - old_log_probs, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)).detach()
    low, high = 1.0 - cfg.cispo_clip_ratio_low, 1.0 + cfg.cispo_clip_ratio_high
    weight = torch.clamp(ratio, low, high)
    loss_mat = -weight * advantages * log_probs
    metrics = {
        "actor/pg_clipfrac": masked_mean(((ratio > high) | (ratio < low)).float(), response_mask),
        "actor/ppo_kl": _ppo_kl(old_log_probs, log_probs, response_mask),
        "actor/pg_clipfrac_lower": masked_mean((ratio < low).float(), response_mask),
    }
    return agg(loss_mat, response_mask), metrics


def entropy_loss(entropy: Tensor, response_mask: Tensor, agg: Aggregator) -> tuple[Tensor, dict[str, Tensor]]:
    """The entropy bonus: the actor minimises pg_loss - entropy_coeff * this.

    Args:
        entropy: [B, T] float32 per-token entropy of the policy (from the actor's fused kernel).
        response_mask: [B, T] float 0/1.
        agg: aggregation closure.

    Returns:
        aggregated entropy (scalar, differentiable) and metrics {actor/entropy}.
    """
    value = agg(entropy, response_mask)
    return value, {"actor/entropy": value.detach()}
