"""Failure handling with real processes: dead workers, restarts, SIGTERM, bad rewards, NaN updates (the SIGKILL resume
is in test_deterministic_runs.py)."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import psutil
import pytest
from runs import REWARD_FNS, metrics, ray_processes, run_to_end, start_run, wait_for

pytestmark = pytest.mark.slow


def test_a_dead_worker_stops_the_run_with_its_name(tiny_model_dir: Path, tmp_path: Path) -> None:
    proc = start_run(
        tiny_model_dir, tmp_path / "out", tmp_path / "data", "trainer.total_steps=500", log=tmp_path / "run.log"
    )
    wait_for(lambda: len(metrics(tmp_path / "out")) >= 1, timeout=300, what="the first step")
    victims = ray_processes("ActorRolloutRefWorker", proc)
    assert victims, "no policy worker process found"
    killed_at = time.monotonic()
    victims[0].kill()
    proc.wait(timeout=120)
    log = (tmp_path / "run.log").read_text()
    assert proc.returncode != 0
    assert time.monotonic() - killed_at < 60
    assert "actor_rollout_ref worker rank" in log and "on node" in log, log[-3000:]


def test_max_restarts_recovers_from_a_dead_worker_then_sigterm_checkpoints_and_shuts_down(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # One run for two behaviours (a driver start costs most of a test): a killed worker is restarted from the last
    # checkpoint, and SIGTERM later finishes the step in flight, checkpoints it and takes every worker down.
    out = tmp_path / "out"
    proc = start_run(
        tiny_model_dir,
        out,
        tmp_path / "data",
        "trainer.total_steps=500",
        "trainer.save_freq=1",
        "trainer.max_restarts=1",
        log=tmp_path / "run.log",
    )
    wait_for(lambda: len(metrics(out)) >= 2, timeout=300, what="two steps")
    ray_processes("ActorRolloutRefWorker", proc)[0].kill()
    wait_for(lambda: "restarting the worker groups" in (tmp_path / "run.log").read_text(), 120, "the restart")
    wait_for(lambda: len(metrics(out)) >= 4, timeout=300, what="two steps after the restart")
    workers = ray_processes("ActorRolloutRefWorker", proc)
    assert workers
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    log = (tmp_path / "run.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    steps = [r["step"] for r in metrics(out)]
    assert steps == list(range(1, steps[-1] + 1))  # no step lost or logged twice across the restart
    checkpoint = out / "rlhf" / "grpo_arith_tiny" / "checkpoints" / f"step_{steps[-1]:08d}"
    assert (checkpoint / "COMPLETE").exists()
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, "policy workers outlived the driver"


def test_reward_errors_timeouts_and_nans_score_zero_are_counted_and_metrics_stay_finite(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    proc = run_to_end(
        tiny_model_dir,
        tmp_path / "out",
        tmp_path / "data",
        "trainer.total_steps=2",
        f"reward.function={REWARD_FNS}:raises_hangs_or_nan",
        "reward.timeout_s=1",
        log=tmp_path / "run.log",
    )
    log = (tmp_path / "run.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    rows = metrics(tmp_path / "out")
    assert [r["step"] for r in rows] == [1, 2]
    assert sum(r["reward/errors"] for r in rows) > 0 and sum(r["reward/timeouts"] for r in rows) > 0
    assert "flaky reward refuses" in log  # the first traceback is logged
    for row in rows:
        # Every item failed (raised, hung or NaN): the NaNs too are counted, 8 prompts x 4 samples per step.
        assert row["reward/errors"] + row["reward/timeouts"] == 32
        assert row["critic/score/mean"] == 0.0
        non_finite = {k: v for k, v in row.items() if not isinstance(v, (int, float)) or not math.isfinite(v)}
        assert not non_finite, non_finite


def test_nan_updates_are_skipped_then_stop_the_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    # REINFORCE++ whitens returns over the batch: the mean of many 3e38 returns overflows float32 to inf, so the
    # advantages and the loss are NaN. (A NaN reward itself is a failed item scored 0; see the next test.)
    proc = run_to_end(
        tiny_model_dir,
        tmp_path / "out",
        tmp_path / "data",
        "trainer.total_steps=6",
        "algorithm=reinforce_pp",
        f"reward.function={REWARD_FNS}:near_float32_max",
        "trainer.max_consecutive_skipped_updates=2",
        log=tmp_path / "run.log",
    )
    log = (tmp_path / "run.log").read_text()
    assert proc.returncode != 0
    assert "2 consecutive updates had a NaN/inf loss or gradient" in log, log[-3000:]
    rows = metrics(tmp_path / "out")
    assert [r["actor/skipped_update"] for r in rows] == [1.0]  # step 2 raised before it was logged
