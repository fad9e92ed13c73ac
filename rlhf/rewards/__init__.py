"""Rule-based reward functions, loading user functions by spec, and the process pool that runs them."""

from rlhf.rewards.math_answer import (
    arith_score,
    exact_match_score,
    extract_answer,
    format_score,
    math_answer_score,
)
from rlhf.rewards.registry import (
    RewardFn,
    builtin_data_sources,
    check_data_sources,
    default_reward_fn,
    load_reward_fn,
    reward_fn_spec,
)
from rlhf.rewards.runner import RewardResult, RewardRunner
from rlhf.rewards.scoring import RewardItem

__all__ = [
    "RewardFn",
    "RewardItem",
    "RewardResult",
    "RewardRunner",
    "arith_score",
    "builtin_data_sources",
    "check_data_sources",
    "default_reward_fn",
    "exact_match_score",
    "extract_answer",
    "format_score",
    "load_reward_fn",
    "math_answer_score",
    "reward_fn_spec",
]
