"""rlhf.rewards.runner: scoring in worker processes with errors, timeouts, extras, and inline."""

import math

import pytest
from fixtures_fns import SPEC_PREFIX

import rlhf.rewards.pool as pool_module
from rlhf.rewards import RewardItem, RewardRunner, arith_score

SCORE_SPEC = SPEC_PREFIX + "first_char_score"


def _items(solutions, ground_truth="4"):
    return [RewardItem("test", solution, ground_truth) for solution in solutions]


def test_errors_count_and_score_zero():
    with RewardRunner(SCORE_SPEC, num_workers=2, timeout_s=30) as runner:
        result = runner.score(_items(["4", "raise", "5", "none", "42"]))
    assert result.scores == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert (result.num_errors, result.num_timeouts) == (2, 0)
    assert "ZeroDivisionError: bad sample" in result.first_traceback
    assert result.extra == {}


def test_hang_times_out_and_others_still_score():
    # "hang" sleeps 60 s: waited out, it would score 0.0 but count no timeout, so num_timeouts == 2 shows both were
    # cut off at their deadline.
    solutions = ["4", "hang", "4x", "5", "4", "hang"] + ["4", "3"] * 10
    expected = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0] + [1.0, 0.0] * 10
    with RewardRunner(SCORE_SPEC, num_workers=2, timeout_s=1.0) as runner:
        result = runner.score(_items(solutions))
        assert result.scores == expected
        assert (result.num_errors, result.num_timeouts) == (0, 2)
        assert result.timeout_flags == [s == "hang" for s in solutions]
        assert result.first_traceback is None
        # the replaced workers serve the next call
        assert runner.score(_items(["4", "1"])).scores == [1.0, 0.0]


def test_deadline_is_per_item_not_per_chunk(monkeypatch):
    # One chunk of 5 items sleeping 0.3 s each: the chunk runs 1.5 s > timeout_s = 1.0 s, each item 0.3 s. A
    # deadline per chunk would kill the worker mid-chunk; per item, all five score. Sleeps last at least their
    # length, so the chunk's overrun is certain; each item has 0.7 s of slack against its own deadline.
    monkeypatch.setattr(pool_module, "_CHUNKS_PER_WORKER", 1)  # one call = one chunk per worker
    sleep_s, timeout_s = 0.3, 1.0
    items = [RewardItem("test", "x", "x", {"sleep_s": sleep_s}) for _ in range(5)]
    with RewardRunner(SPEC_PREFIX + "timed_score", num_workers=1, timeout_s=timeout_s) as runner:
        result = runner.score(items)
    assert result.scores == [1.0] * 5
    assert result.num_timeouts == 0
    assert len(set(result.extra["pid"])) == 1, "one worker scored the whole chunk"
    starts = result.extra["started_at"]
    assert starts[-1] - starts[0] >= 4 * sleep_s > timeout_s, "the chunk ran past timeout_s before its last item"


def test_non_finite_returns_are_errors_scored_zero():
    # 1e39 is finite in Python but inf once stored in the float32 score tensor
    solutions = ["ok", "nan", "inf", "-inf", "np_nan", "1e39", "nan_extra", "ok"]
    for num_workers in (0, 2):
        with RewardRunner(SPEC_PREFIX + "non_finite_score", num_workers=num_workers, timeout_s=30) as runner:
            result = runner.score(_items(solutions))
        assert result.scores == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], num_workers
        assert result.error_flags == [False, True, True, True, True, True, True, False], num_workers
        assert result.num_timeouts == 0
        assert "ValueError: reward function returned score nan" in result.first_traceback
        # failed items carry no extra values; the others keep theirs
        assert result.extra["acc"][0] == 1.0 and result.extra["acc"][-1] == 1.0
        assert all(math.isnan(v) for v in result.extra["acc"][1:-1])


def test_non_finite_extra_value_message():
    result = RewardRunner(SPEC_PREFIX + "non_finite_score", num_workers=0, timeout_s=1).score(_items(["nan_extra"]))
    assert result.scores == [0.0] and result.num_errors == 1
    assert "non-finite extra values {'acc': nan}" in result.first_traceback


def test_worker_death_is_an_error_and_worker_replaced():
    with RewardRunner(SCORE_SPEC, num_workers=1, timeout_s=30) as runner:
        result = runner.score(_items(["4", "exit", "4"]))
    assert result.scores == [1.0, 0.0, 1.0]
    assert result.num_errors == 1
    assert "exit code 3" in result.first_traceback


def test_dict_returns_become_extra_metrics():
    items = [
        RewardItem("test", "ab", "ab", {"bonus": True}),
        RewardItem("test", "abc", "ab"),
        RewardItem("test", "ab", "ab"),
    ]
    with RewardRunner(SPEC_PREFIX + "dict_score", num_workers=2, timeout_s=30) as runner:
        result = runner.score(items)
    assert result.scores == [1.0, 0.0, 1.0]
    assert result.extra["length"] == [2.0, 3.0, 2.0]
    assert result.extra["bonus"][0] == 1.0 and all(v != v for v in result.extra["bonus"][1:])  # NaN where absent
    assert "note" not in result.extra


def test_pool_is_reused_across_calls():
    with RewardRunner(SPEC_PREFIX + "pid_score", num_workers=2, timeout_s=30) as runner:
        # Which of the 2 workers takes which chunk varies (one may still be starting), so compare the union: a pool
        # rebuilt on every call would show more than 2 distinct worker processes over 3 calls.
        pids = [set(runner.score(_items(["x"] * 40)).scores) for _ in range(3)]
    assert len(set().union(*pids)) <= 2, pids


def test_default_functions_by_data_source():
    items = [RewardItem("arith", "46", "46"), RewardItem("arith", "46 junk", "46"), RewardItem("gsm8k", "#### 7", "7")]
    with RewardRunner(None, num_workers=1, timeout_s=30) as runner:
        assert runner.score(items).scores == [1.0, 0.0, 1.0]
    assert RewardRunner(num_workers=0, timeout_s=1).score(items).scores == [1.0, 0.0, 1.0]


def test_module_level_function_object():
    with RewardRunner(arith_score, num_workers=1, timeout_s=30) as runner:
        assert runner.score([RewardItem("x", "3", "3")]).scores == [1.0]


def test_inline_mode():
    def local_fn(data_source, solution_str, ground_truth, extra_info=None):  # fine inline: nothing is pickled
        if solution_str == "raise":
            raise RuntimeError("inline failure")
        return {"score": 0.5, "n": 1}

    runner = RewardRunner(local_fn, num_workers=0, timeout_s=1)
    result = runner.score(_items(["a", "raise"]))
    assert result.scores == [0.5, 0.0]
    assert result.num_errors == 1 and "inline failure" in result.first_traceback
    assert result.extra["n"][0] == 1.0
    assert runner.score([]).scores == []


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="reward.num_workers=-1"):
        RewardRunner(num_workers=-1, timeout_s=1)
    with pytest.raises(ValueError, match="reward.timeout_s=0"):
        RewardRunner(num_workers=1, timeout_s=0)
    with pytest.raises(ValueError, match="module-level function"):
        RewardRunner(lambda *a: 0.0, num_workers=1, timeout_s=1)
    with pytest.raises(ValueError, match="not a function"):
        RewardRunner(SPEC_PREFIX + "NOT_CALLABLE", num_workers=1, timeout_s=1)
