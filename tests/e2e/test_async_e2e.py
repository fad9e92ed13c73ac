"""Issue 11 end to end on CPU: split placement (one trainer process, one vLLM rollout process) against colocated.

Three deterministic runs of the tiny recipe, side by side (each its own local Ray and data folder): colocated
synchronous, split with max_staleness=0 and split with max_staleness=1. Per-request sampling seeds come from the
prompt batch, so split synchronous training must reproduce the colocated run's numbers: same samples, same updates,
and a weight sync over gloo that lands exactly (vLLM's log-probs match the trainer's after every sync).

The split synchronous run also loses its rollout worker in the middle of a weight sync: the worker SIGKILLs itself
after the first tensor of the sync that follows step 2 (DIE_MID_SYNC_ENV), the trainer's sync fails with
WeightSyncError naming both sides, and trainer.max_restarts restarts the groups from the step-1 checkpoint. Its
metrics must still equal the uninterrupted colocated run's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rlhf.workers.rollout_worker import DIE_MID_SYNC_ENV
from runs import kill_at_checkpoint_then_resume, metrics, start_run

pytestmark = pytest.mark.slow

NUM_STEPS = 5
COMMON = [
    f"trainer.total_steps={NUM_STEPS}",
    "trainer.deterministic=true",
    "trainer.num_devices_per_node=1",  # one trainer process (the CPU target)
    "algorithm.rollout_is=token",  # the same correction in every run (needed for stale samples)
]
SPLIT = ["async_training.placement=split", "async_training.num_rollout_workers=1"]
MODES = {
    "colocated": [],
    "split_sync": [*SPLIT, "async_training.max_staleness=0"],
    # Checkpoints at steps 2 and 4: this run is also the uninterrupted reference of the SIGKILL + resume test.
    "split_stale1": [
        *SPLIT,
        "async_training.max_staleness=1",
        "async_training.sync_bucket_mb=0.25",
        "trainer.save_freq=2",
    ],
}
KILL_MID_SYNC = [  # small buckets, so the sender is still broadcasting when the receiver dies
    "trainer.max_restarts=1",
    "trainer.save_freq=1",
    "async_training.sync_bucket_mb=0.01",
    "async_training.sync_timeout_s=60",
]
COMPARED = [
    "critic/score/mean",
    "actor/pg_loss",
    "actor/entropy",
    "actor/grad_norm",
    "response_length/mean",
    "rollout/logprob_diff_max",
]


@pytest.fixture(scope="module")
def runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    root = tmp_path_factory.mktemp("async")
    fault = {"split_sync": (KILL_MID_SYNC, {DIE_MID_SYNC_ENV: f"3:{root / 'rollout_worker_died'}"})}
    procs = {}
    for mode, extra in MODES.items():
        more, env = fault.get(mode, ([], {}))
        log = root / f"{mode}.log"
        procs[mode] = start_run(
            tiny_model_dir, root / mode, root / f"data_{mode}", *COMMON, *extra, *more, log=log, env=env
        )
    found = {}
    for mode, proc in procs.items():
        proc.wait(timeout=900)
        assert proc.returncode == 0, (root / f"{mode}.log").read_text()[-4000:]
        found[mode] = metrics(root / mode)
        assert [r["step"] for r in found[mode]] == list(range(1, NUM_STEPS + 1)), mode
    found["split_sync_log"] = (root / "split_sync.log").read_text()
    return found


def test_a_rollout_worker_killed_mid_sync_fails_the_sync_by_name_and_the_run_restarts(runs: dict) -> None:
    log = runs["split_sync_log"]
    assert f"{DIE_MID_SYNC_ENV}: rollout worker 0 kills itself in weight sync 3" in log
    # The sync names both sides (the rollout worker's node is this machine's) and what it was doing.
    assert "WeightSyncError: weight sync trainer rank 0 on " in log and "-> rollout worker(s) 0..0 on " in log
    assert "failed while syncing weights (async_training.sync_timeout_s=60)" in log
    assert "restart 1 of trainer.max_restarts=1" in log
    assert "step_00000001 at step 1" in log.split("resumed from", 1)[-1].splitlines()[0], "resumed from step 1"


def test_split_synchronous_gives_the_colocated_metrics(runs: dict[str, list[dict]]) -> None:
    for colocated, split in zip(runs["colocated"], runs["split_sync"], strict=True):
        for key in COMPARED:
            assert split[key] == pytest.approx(colocated[key], rel=1e-4, abs=1e-5), (split["step"], key)
        # Contract 2 across processes: after each gloo sync vLLM's log-probs are the trainer's.
        assert split["rollout/logprob_diff_max"] < 1e-3, split
        assert split["async/staleness/max"] == 0.0 and colocated["async/staleness/max"] == 0.0
        assert split["perf/update_weights_bytes"] == colocated["perf/update_weights_bytes"] > 0


def test_one_step_off_policy_is_bounded_and_learns(runs: dict[str, list[dict]]) -> None:
    rows = runs["split_stale1"]
    # Batch 1 comes from the initial weights; from then on batch k+1 generates while batch k trains: one update old.
    assert [r["async/staleness/max"] for r in rows] == [0.0] + [1.0] * (NUM_STEPS - 1)
    assert all(r["async/staleness/mean"] == r["async/staleness/max"] for r in rows)
    for row in rows:
        for key in ("timing_s/wait_rollout", "timing_s/wait_train", "async/idle_frac/actor", "async/idle_frac/rollout"):
            assert key in row and row[key] >= 0, (row["step"], key)
        assert "rollout_corr/is_weight_mean" in row  # truncated IS reweights the stale samples
    # Stale samples were sampled by the previous weights: their vLLM log-probs differ from the trainer's.
    assert max(r["rollout/logprob_diff_max"] for r in rows[1:]) > 1e-3
    # Same prompts and seeds as the synchronous run; the dense reward rises over the run as it does there.
    scores = [r["critic/score/mean"] for r in rows]
    assert sum(scores[-2:]) / 2 > scores[0], scores


def test_sigkill_then_resume_keeps_the_generations_in_flight(
    runs: dict[str, list[dict]], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Issue 11's exact resume: the step-2 checkpoint of a one-step off-policy run holds batch 3, generated by the
    step-1 weights; the resumed run trains on exactly it, and steps 3-5 match the uninterrupted run's (the fixture's
    split_stale1 run, same config)."""
    out = tmp_path / "out"
    common = [*COMMON, *MODES["split_stale1"]]
    log = kill_at_checkpoint_then_resume(tiny_model_dir, out, tmp_path / "data", *common, logs=tmp_path, step=2)
    expected = {row["step"]: row for row in runs["split_stale1"]}
    assert "resumed from" in log
    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(1, NUM_STEPS + 1))
    for row in rows[2:]:
        assert row["async/staleness/max"] == 1.0
        for key in COMPARED:
            assert row[key] == pytest.approx(expected[row["step"]][key], rel=1e-5, abs=1e-6), (row["step"], key)
