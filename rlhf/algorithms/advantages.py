"""Advantage estimators behind `algorithm.advantage`, one registry with one signature.

    fn(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> (advantages [B, T], returns [B, T])

Outcome-reward estimators use the sequence score = token_level_rewards.sum(-1) (it includes any per-token KL
penalty folded into the rewards), broadcast to every response token. Outputs are zero on padding, and a fully
masked row (an empty response) gets zeros, never NaN. Register your own with `@register_advantage("name")` in a
module listed in `algorithm.plugin_modules`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rlhf.algorithms.config import AlgorithmConfig
from rlhf.algorithms.core import group_stats, masked_whiten
from rlhf.algorithms.registry import ADVANTAGE_ESTIMATORS

# Added to the group std before dividing (verl's GRPO epsilon).
STD_EPS = 1e-6


@dataclass
class AdvantageInputs:
    """Everything an estimator may read; estimators that need an optional field raise if it is None."""

    token_level_rewards: Tensor
    """[B, T] float32 rewards per response token (score on the last token, minus any in-reward KL penalty)."""
    response_mask: Tensor
    """[B, T] float 0/1."""
    group_ids: Tensor
    """[B] long; responses to the same prompt share an id (a GRPO group)."""
    values: Tensor | None = None
    """[B, T] float32 critic values (gae)."""
    baseline_scores: Tensor | None = None
    """[B] float32 score of the greedy response to the same prompt (remax)."""


AdvantageFn = Callable[[AdvantageInputs, AlgorithmConfig], tuple[Tensor, Tensor]]


def register_advantage(
    name: str, *, override: bool = False, on_policy_only: bool = False
) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator registering an estimator under `name` (the value of `algorithm.advantage`); `on_policy_only`
    marks one whose maths needs the current policy's samples (refused with `async_training.max_staleness > 0`)."""
    return ADVANTAGE_ESTIMATORS.register(name, override=override, on_policy_only=on_policy_only)


def get_advantage_fn(name: str) -> AdvantageFn:
    """The estimator registered as `name`; ValueError listing the choices otherwise."""
    return ADVANTAGE_ESTIMATORS.lookup(name)


def _sequence_scores(inputs: AdvantageInputs) -> Tensor:
    """[B] outcome score: the sum of the token rewards (including any per-token KL penalty)."""
    return inputs.token_level_rewards.sum(dim=-1)


def _broadcast(seq_values: Tensor, response_mask: Tensor) -> Tensor:
    """[B] -> [B, T], zero on padding."""
    return seq_values.unsqueeze(-1) * response_mask


# ---- estimators ----------------------------------------------------------------------------------------------------


@register_advantage("gae")
def gae_advantage(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """Generalised Advantage Estimation (Schulman et al., 2015, arXiv:1506.02438), whitened over the batch.

    delta_t = r_t + gamma * V_{t+1} - V_t,  A_t = delta_t + gamma * lam * A_{t+1}, computed right to left; masked
    positions are skipped (V and A carry over them), so interior masks (multi-turn) work. returns = A + V (the
    critic's targets, before whitening); advantages are whitened over all masked tokens of the batch.

    Uses `inputs.values` [B, T] (required), `cfg.gamma`, `cfg.lam`.
    """
    if inputs.values is None:
        raise ValueError("algorithm.advantage='gae' needs critic values (AdvantageInputs.values is None)")
    rewards, values, mask = inputs.token_level_rewards, inputs.values, inputs.response_mask
    num_tokens = rewards.shape[-1]
    next_value = rewards.new_zeros(rewards.shape[0])  # [B]
    last_gae = rewards.new_zeros(rewards.shape[0])  # [B]
    advantages_reversed = []
    for t in reversed(range(num_tokens)):
        delta = rewards[:, t] + cfg.gamma * next_value - values[:, t]
        gae_t = delta + cfg.gamma * cfg.lam * last_gae
        m = mask[:, t]
        next_value = values[:, t] * m + (1 - m) * next_value
        last_gae = gae_t * m + (1 - m) * last_gae
        advantages_reversed.append(last_gae)
    advantages = torch.stack(advantages_reversed[::-1], dim=-1)  # [B, T]
    returns = (advantages + values) * mask
    advantages = masked_whiten(advantages, mask) * mask
    return advantages, returns


@register_advantage("grpo")
def grpo_advantage(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """GRPO outcome advantage (Shao et al., DeepSeekMath, 2024, arXiv:2402.03300).

    A_i = (s_i - mean(group)) / (std(group) + 1e-6) with the unbiased std, or s_i - mean(group) when
    `cfg.norm_adv_by_std` is False. A group of size 1, or one whose scores all agree, gets advantage 0: it carries
    no comparison signal (verl instead gives a lone sample its raw score). returns = advantages.
    """
    scores = _sequence_scores(inputs)
    stats = group_stats(scores, inputs.group_ids)
    advantages = scores - stats.mean
    if cfg.norm_adv_by_std:
        advantages = advantages / (stats.std + STD_EPS)
    advantages = torch.where(stats.is_informative, advantages, torch.zeros_like(advantages))
    advantages = _broadcast(advantages, inputs.response_mask)
    return advantages, advantages


@register_advantage("drgrpo")
def drgrpo_advantage(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """Dr.GRPO advantage (Liu et al., "Understanding R1-Zero-Like Training", 2025, arXiv:2503.20783).

    A_i = s_i - mean(group): GRPO without the std division (which over-weights too-easy / too-hard prompts).
    The paper's other fix, a constant length normaliser, is `loss_agg_mode=seq-mean-token-sum-norm`.
    Groups of size 1 / all-equal scores give 0. returns = advantages.
    """
    scores = _sequence_scores(inputs)
    stats = group_stats(scores, inputs.group_ids)
    advantages = torch.where(stats.is_informative, scores - stats.mean, torch.zeros_like(scores))
    advantages = _broadcast(advantages, inputs.response_mask)
    return advantages, advantages


@register_advantage("rloo")
def rloo_advantage(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """REINFORCE Leave-One-Out (Ahmadian et al., "Back to Basics", 2024, arXiv:2402.14740; Kool et al. 2019).

    A_i = s_i - mean_{j != i} s_j = n / (n - 1) * (s_i - mean(group)). A group of size 1 has no other sample to
    form a baseline and gets 0. returns = advantages.
    """
    scores = _sequence_scores(inputs)
    stats = group_stats(scores, inputs.group_ids)
    scale = stats.size / (stats.size - 1).clamp(min=1.0)
    advantages = torch.where(stats.is_informative, scale * (scores - stats.mean), torch.zeros_like(scores))
    advantages = _broadcast(advantages, inputs.response_mask)
    return advantages, advantages


@register_advantage("reinforce_pp")
def reinforce_pp_advantage(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """REINFORCE++ (Hu, 2025, arXiv:2501.03262): discounted return-to-go, whitened over the whole batch.

    G_t = r_t + gamma * G_{t+1} over the response tokens; masked positions are skipped (they neither add a reward
    nor discount), so the return flows across the observation tokens of a multi-turn response, as in GAE. Then
    advantages = whiten(G) over every masked token of the batch. Uses `cfg.gamma`. returns = G.
    """
    rewards, mask = inputs.token_level_rewards, inputs.response_mask
    running = rewards.new_zeros(rewards.shape[0])  # [B]
    returns_reversed = []
    for t in reversed(range(rewards.shape[-1])):
        m = mask[:, t]
        running = (rewards[:, t] + cfg.gamma * running) * m + (1 - m) * running
        returns_reversed.append(running)
    returns = torch.stack(returns_reversed[::-1], dim=-1) * mask  # [B, T]
    advantages = masked_whiten(returns, mask) * mask
    return advantages, returns


@register_advantage("reinforce_pp_baseline")
def reinforce_pp_baseline_advantage(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """REINFORCE++-baseline (Hu, 2025, arXiv:2501.03262): group-mean baseline, then batch whitening.

    A_i = s_i - mean(group) (0 for groups of one or all-equal scores), broadcast to tokens, then whitened over
    every masked token of the batch. returns = advantages.
    """
    scores = _sequence_scores(inputs)
    stats = group_stats(scores, inputs.group_ids)
    centred = torch.where(stats.is_informative, scores - stats.mean, torch.zeros_like(scores))
    advantages = masked_whiten(_broadcast(centred, inputs.response_mask), inputs.response_mask)
    advantages = advantages * inputs.response_mask
    return advantages, advantages


# The baseline is the *current* policy's greedy response: a stale engine would give another policy's baseline.
@register_advantage("remax", on_policy_only=True)
def remax_advantage(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """ReMax (Li et al., 2023, arXiv:2310.10505): the greedy response's score as the baseline.

    A_i = s_i - baseline_i, broadcast to tokens. returns = s_i broadcast (the undiscounted return).

    Raises:
        ValueError: `inputs.baseline_scores` is None (the trainer must generate and score a greedy response).
    """
    if inputs.baseline_scores is None:
        raise ValueError("algorithm.advantage='remax' needs baseline_scores: the score of a greedy response per prompt")
    scores = _sequence_scores(inputs)
    advantages = _broadcast(scores - inputs.baseline_scores, inputs.response_mask)
    return advantages, _broadcast(scores, inputs.response_mask)
