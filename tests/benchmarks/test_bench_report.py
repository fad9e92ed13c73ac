"""The cross-framework benchmark's pure parts: reward, workload data, per-step summaries, ratios and the floor."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # scripts, not a package

import report  # noqa: E402
from ours import kv_cache_gb  # noqa: E402
from reward import compute_score, trl_reward  # noqa: E402
from workload import make_rows  # noqa: E402
from workloads import WORKLOADS, get_workload  # noqa: E402


def test_reward_is_one_only_when_the_completion_starts_with_the_sum() -> None:
    assert compute_score("bench_arith", "1258<eos>", "1258") == 1.0
    assert compute_score("bench_arith", "12589", "1258") == 1.0  # "starts with", as issue 13 defines it
    assert compute_score("bench_arith", " 1258", "1258") == 0.0
    assert compute_score("bench_arith", "125", "1258") == 0.0
    assert trl_reward(["1+2=", "3+4="], ["3", "8"], ground_truth=["3", "7"]) == [1.0, 0.0]


def test_rows_are_deterministic_sums_in_range() -> None:
    rows = make_rows(50, seed=3, max_operand=999)
    assert rows == make_rows(50, seed=3, max_operand=999)
    assert rows != make_rows(50, seed=4, max_operand=999)
    for row in rows:
        a, b = row["prompt"][0]["content"].removesuffix("=").split("+")
        assert 0 <= int(a) <= 999 and 0 <= int(b) <= 999
        assert row["reward_model"]["ground_truth"] == str(int(a) + int(b))


def test_workloads_fill_one_optimizer_step_with_whole_micro_batches() -> None:
    for w in WORKLOADS.values():
        assert w.num_samples % w.micro_batch == 0, w.name
    assert get_workload("25m").num_samples == 128
    assert get_workload("long512").max_response_length == 512
    with pytest.raises(ValueError, match="--workload 'big' is unknown"):
        get_workload("big")


def test_kv_cache_holds_a_ranks_sequences_in_whole_blocks() -> None:
    # 25m fp32: 64 sequences per rank x 2 blocks of 128 tokens (16 + 128) x 16 KiB a token (2 x 8 layers x 4 KV heads
    # x 64 x 4 bytes) = 0.25 GiB, + a quarter = 0.3125; bf16 halves the bytes (0.15625 -> 0.1875 in 1/16 GiB).
    assert kv_cache_gb(get_workload("25m"), "fp32") == 0.3125
    assert kv_cache_gb(get_workload("25m"), "bf16") == 0.1875
    assert kv_cache_gb(get_workload("long512"), "fp32") == 0.8125  # 5 blocks a sequence: 0.625 GiB x 1.25


def record(step: float, gen: float, update: float, tokens: float, response_tokens: float, **extra: float) -> dict:
    return {
        "timing_s/step": step,
        "timing_s/gen": gen,
        "timing_s/update_actor": update,
        "perf/total_num_tokens": tokens,
        "perf/response_tokens": response_tokens,
        **extra,
    }


def test_step_view_counts_what_no_work_stage_covers_as_overhead() -> None:
    view = report.step_view(
        record(10.0, 4.0, 3.0, 1000.0, 800.0, **{"timing_s/old_log_prob": 1.5, "timing_s/update_weights": 0.5})
    )
    assert view["overhead"] == pytest.approx(1.0)  # 10 - (4 + 1.5 + 3 + 0.5)
    assert view["tokens_per_s"] == pytest.approx(100.0)
    assert view["gen_tokens_per_s"] == pytest.approx(200.0)
    assert view["reward"] == 0.0  # a stage the record lacks reads 0


def test_summaries_ratios_and_floor() -> None:
    ours = report.summarize([record(10.0, 4, 3, 1000, 800), record(12.0, 4, 3, 1000, 800), record(11.0, 4, 3, 1, 1)])
    trl = report.summarize([record(20.0, 5, 6, 1000, 800), record(16.0, 5, 6, 1000, 800)])
    assert ours["step"] == {"median": 11.0, "min": 10.0, "max": 12.0, "n": 3}
    ratios = report.ratios(ours, trl)
    assert ratios["step"] == pytest.approx(11.0 / 18.0)
    assert ratios["step_best_vs_best"] == pytest.approx(10.0 / 16.0)
    assert ratios["update_actor"] == pytest.approx(0.5)
    assert "update_weights" not in ratios  # zero in TRL: no ratio
    floor = report.floor_seconds(num_params=25_000_000, tokens=10_000, peak_gflops=100.0, vllm_seconds=2.0)
    assert floor["train_s"] == pytest.approx(15.0)  # 6 * 25e6 * 1e4 / 1e11
    assert floor["step_s"] == pytest.approx(17.0)
    table = report.format_table({"ours": ours, "trl": trl})
    assert "| step (s) | 11.000 [10.000, 12.000] | 18.000 [16.000, 20.000] |" in table
