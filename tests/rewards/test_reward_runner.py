"""rlhf.rewards.runner: scoring in worker processes with errors, timeouts, extras, and inline."""

import time

import pytest
from fixtures_fns import SPEC_PREFIX

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
    solutions = ["4", "hang", "4x", "5", "4", "hang"] + ["4", "3"] * 10
    expected = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0] + [1.0, 0.0] * 10
    with RewardRunner(SCORE_SPEC, num_workers=2, timeout_s=1.0) as runner:
        runner.score(_items(["4"]))  # start the pool: start-up is not what is measured
        start = time.monotonic()
        result = runner.score(_items(solutions))
        elapsed = time.monotonic() - start
        assert result.scores == expected
        assert (result.num_errors, result.num_timeouts) == (0, 2)
        assert result.first_traceback is None
        assert elapsed < 6.0, f"a call with two hanging items took {elapsed:.1f} s"
        # the replaced workers serve the next call
        assert runner.score(_items(["4", "1"])).scores == [1.0, 0.0]


def test_deadline_is_per_item_not_per_chunk():
    # 12 items on 1 worker go in chunks of 3: 0.45 s per chunk > timeout_s, 0.15 s per item < timeout_s.
    with RewardRunner(SCORE_SPEC, num_workers=1, timeout_s=0.4) as runner:
        # Start the pool first: in a fresh environment the first imports (no .pyc yet) can take longer than 0.4 s,
        # and start-up is not what this test measures.
        runner.score(_items(["4"]))
        result = runner.score(_items(["slow"] * 12))
    assert result.scores == [1.0] * 12
    assert result.num_timeouts == 0


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
