"""Scoring one response: calling a reward function safely and reading its float-or-dict return value."""

import math
import numbers
import traceback
from dataclasses import dataclass
from typing import Any

from rlhf.rewards.registry import RewardFn, default_reward_fn


@dataclass
class RewardItem:
    """One response to score, with what the reward function needs to know about its prompt."""

    data_source: str
    solution_str: str
    ground_truth: str
    extra_info: dict[str, Any] | None = None


# Scores and extra values are stored as float32 tensors: anything larger in magnitude becomes inf there.
FLOAT32_MAX = 3.4028234663852886e38

# (score, extra metrics, traceback or None)
Outcome = tuple[float, dict[str, float], str | None]


def _as_float(value: Any) -> float | None:
    return float(value) if isinstance(value, numbers.Real) else None  # bool, int, float, numpy scalars


def _is_finite_float32(value: float) -> bool:
    return math.isfinite(value) and abs(value) <= FLOAT32_MAX


def parse_reward_output(output: Any) -> tuple[float, dict[str, float]]:
    """(score, extra metrics) from a reward function's return value: a number, or a dict with "score".

    Non-numeric dict values are ignored. NaN or inf (or a value past float32's range, inf once stored), as the
    score or as an extra value, is an error: one such value would turn the batch's mean score (and the advantages
    computed from it) into NaN.

    Raises:
        TypeError, ValueError: not a number, a dict without a numeric "score", or a NaN / inf value.
    """
    if isinstance(output, dict):
        if "score" not in output:
            raise ValueError(f"reward function returned a dict without 'score' (keys: {sorted(output)})")
        score = _as_float(output["score"])
        if score is None:
            raise TypeError(f"reward function returned score {output['score']!r}; expected a number")
        extra = {key: f for key, value in output.items() if key != "score" and (f := _as_float(value)) is not None}
    else:
        score, extra = _as_float(output), {}
        if score is None:
            raise TypeError(f"reward function returned {output!r:.200}; expected a number or a dict with 'score'")
    if not _is_finite_float32(score):
        raise ValueError(f"reward function returned score {score}; a score must be a finite number (float32)")
    bad_extra = {key: value for key, value in extra.items() if not _is_finite_float32(value)}
    if bad_extra:
        raise ValueError(f"reward function returned non-finite extra values {bad_extra}; they must be finite numbers")
    return score, extra


def score_one(fn: RewardFn | None, item: RewardItem) -> Outcome:
    """Score one item with fn (None: the built-in function of its data source); never raises.

    Returns:
        (score, extra metrics, traceback): score 0.0 and the formatted traceback when the function failed.
    """
    try:
        reward_fn = fn if fn is not None else default_reward_fn(item.data_source)
        output = reward_fn(item.data_source, item.solution_str, item.ground_truth, item.extra_info)
        score, extra = parse_reward_output(output)
        return score, extra, None
    except Exception:
        return 0.0, {}, traceback.format_exc()
