"""The benchmark's reward, called by both frameworks: 1.0 if the completion starts with the sum, else 0.0.

Ours loads `compute_score` by spec (`reward.function=benchmarks/reward.py:compute_score`, verl's signature); TRL
gets `trl_reward` in `reward_funcs` (its signature: prompts, completions and the dataset's columns as keywords).
"""

from __future__ import annotations

from typing import Any


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None) -> float:
    """1.0 if `solution_str` starts with `ground_truth` (the sum, as decimal text), else 0.0 (verl's signature)."""
    return 1.0 if solution_str.startswith(str(ground_truth)) else 0.0


def trl_reward(prompts: list[Any], completions: list[str], ground_truth: list[str], **kwargs: Any) -> list[float]:
    """TRL's reward signature: one float per completion; `ground_truth` is the dataset column of that name."""
    return [compute_score("bench_arith", c, gt) for c, gt in zip(completions, ground_truth, strict=True)]
