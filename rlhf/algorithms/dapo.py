"""DAPO's sample-level pieces: dynamic sampling (keep informative groups) and the soft overlong punishment.

Yu et al., "DAPO: An Open-Source LLM Reinforcement Learning System at Scale", 2025, arXiv:2503.14476. Its other
two ingredients are config: clip-higher (`clip_ratio_high=0.28`) and `loss_agg_mode=token-mean`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf.algorithms.core import group_stats


def select_informative_groups(seq_scores: Tensor, group_ids: Tensor) -> Tensor:
    """Keep mask for dynamic sampling: True for samples whose group's scores do not all agree.

    A group whose responses all score the same (all right, all wrong, or a group of one) gives zero GRPO
    advantage, so it only dilutes the batch. Scores are compared exactly (max > min): rule rewards are exact.

    Args:
        seq_scores: [B] float per-response score.
        group_ids: [B] long prompt-group id.

    Returns:
        [B] bool.
    """
    return group_stats(seq_scores.float(), group_ids).is_informative


def overlong_reward_penalty(
    response_lengths: Tensor,
    max_response_length: int,
    buffer_len: int,
    penalty_factor: float,
) -> Tensor:
    """DAPO soft overlong punishment, added to each response's score.

    0 for length <= L_max - L_buffer, then linear down to -penalty_factor at L_max:
    penalty = clamp((L_max - L_buffer - length) / L_buffer, -1, 0) * penalty_factor.

    Args:
        response_lengths: [B] long number of response tokens.
        max_response_length: L_max (`rollout.max_response_length`).
        buffer_len: L_buffer, 1 <= buffer_len <= max_response_length (`algorithm.overlong.buffer_len`).
        penalty_factor: >= 0 (`algorithm.overlong.penalty_factor`).

    Returns:
        [B] float32 penalty <= 0.

    Raises:
        ValueError: buffer_len outside [1, max_response_length].
    """
    if not 1 <= buffer_len <= max_response_length:
        raise ValueError(
            f"algorithm.overlong.buffer_len={buffer_len} must be in [1, max_response_length={max_response_length}]"
        )
    expected_len = max_response_length - buffer_len
    exceed = response_lengths.float() - expected_len
    return torch.clamp(-exceed / buffer_len, min=-1.0, max=0.0) * penalty_factor
