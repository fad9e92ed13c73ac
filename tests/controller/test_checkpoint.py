"""Checkpoint directories: atomic saves, keep-last-K, and resume that verifies before any worker loads (issue 15.14)."""

import json
import logging
from pathlib import Path

import pytest
import torch

from rlhf.checkpoint import (
    CheckpointError,
    CheckpointManager,
    CheckpointMeta,
    capture_rng_state,
    checkpoint_step,
    is_complete,
)
from rlhf.tracking import Tracker, _truncate_after

META = CheckpointMeta(num_ranks=2, model_shape={"model_type": "qwen2", "hidden_size": 128})


def write_files(directory: Path) -> None:
    (directory / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    torch.save(capture_rng_state(), directory / "controller_rng.pt")
    (directory / "actor").mkdir()
    (directory / "actor" / "weights.bin").write_bytes(b"x" * 1000)


def garble(file: Path) -> None:
    """Same size, other bytes: the manifest cannot tell, loading the file must."""
    file.write_bytes(b"{" * file.stat().st_size)


def test_save_marks_complete_and_keeps_last_k(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        path = manager.save(step, write_files, META)
        assert is_complete(path) and checkpoint_step(path) == step
    assert [p.name for p in manager.complete_checkpoints()] == ["step_00000002", "step_00000003"]
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())
    point = manager.resolve("auto", META)
    assert point.path == tmp_path / "step_00000003" and point.trainer_state == {"global_step": 1}


def test_incomplete_checkpoints_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manager = CheckpointManager(tmp_path, keep_last=0)
    manager.save(2, write_files, META)
    (tmp_path / "step_00000004").mkdir()  # renamed but never marked complete (impossible by design, still skipped)
    (tmp_path / ".tmp-step_00000006").mkdir()  # a crash while saving
    with caplog.at_level(logging.WARNING):
        assert manager.resolve("auto", META).path == tmp_path / "step_00000002"
    assert "skipping incomplete checkpoint" in caplog.text and ".tmp-step_00000006" in caplog.text
    assert manager.resolve("never", META) is None
    with pytest.raises(CheckpointError, match="trainer.resume=.*not a complete checkpoint"):
        manager.resolve(str(tmp_path / "step_00000004"), META)


def test_a_crash_inside_write_leaves_no_complete_checkpoint(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=0)

    def crash(directory: Path) -> None:
        (directory / "partial").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError):
        manager.save(5, crash)
    assert manager.latest() is None
    manager.save(5, write_files)  # the next save cleans the leftover temporary directory
    assert manager.latest() == tmp_path / "step_00000005"


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda d: (d / "actor" / "weights.bin").write_bytes(b"x" * 10), "actor/weights.bin has 10 bytes, 1000"),
        (lambda d: (d / "actor" / "weights.bin").unlink(), "actor/weights.bin is missing"),
        (lambda d: garble(d / "trainer_state.json"), "trainer_state.json is unreadable"),
        (lambda d: garble(d / "controller_rng.pt"), "controller_rng.pt is unreadable"),
    ],
    ids=["truncated engine state", "missing file", "garbled trainer state", "garbled rng file"],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage, named: str
) -> None:
    manager = CheckpointManager(tmp_path, keep_last=0)
    manager.save(2, write_files, META)
    newest = manager.save(4, write_files, META)
    damage(newest)
    with caplog.at_level(logging.WARNING):
        point = manager.resolve("auto", META)
    assert point.path == tmp_path / "step_00000002"
    assert f"checkpoint {newest} cannot be used" in caplog.text and named in caplog.text
    assert "falling back to step_00000002" in caplog.text
    with pytest.raises(CheckpointError, match=named.split(" ")[0]):  # named explicitly: stop, naming the file
        manager.resolve(str(newest), META)


def test_a_checkpoint_of_another_rank_count_or_model_is_refused_with_the_reason(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=0)
    manager.save(2, write_files, META)
    with pytest.raises(CheckpointError, match="written by 2 data-parallel ranks and this run has 4"):
        manager.resolve("auto", CheckpointMeta(4, META.model_shape))
    other_model = CheckpointMeta(2, {"model_type": "qwen2", "hidden_size": 256})
    with pytest.raises(CheckpointError, match="hidden_size 128 in the checkpoint vs 256 now"):
        manager.resolve("auto", other_model)
    with pytest.raises(CheckpointError, match="written with LoRA rank 0 and this run has 8 .* to 0"):
        manager.resolve("auto", CheckpointMeta(2, META.model_shape, lora_rank=8))


def test_worker_load_failure_names_the_previous_checkpoint(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=0)
    manager.save(2, write_files, META)
    newest = manager.save(4, write_files, META)
    message = manager.load_failure(newest, RuntimeError("bad shard"))
    assert str(newest) in message and "bad shard" in message and "step_00000002" in message
    assert "trainer.resume=never" in manager.load_failure(tmp_path / "step_00000002", RuntimeError("x"))


def test_metrics_after_the_checkpoint_are_dropped_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "x": s}) + "\n" for s in (1, 2, 3)))
    _truncate_after(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_a_row_lost_between_save_and_log_comes_back_from_the_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "x": s}) + "\n" for s in (1, 2)))
    tracker = Tracker(["jsonl"], "p", "e", run_dir, {}, resume_step=3)  # step 3 was saved, its row never written
    tracker.restore_row({"x": 3.0}, step=3)
    tracker.restore_row({"x": 3.0}, step=2)  # a row already there is not written twice
    tracker.finish()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 1, "x": 1}, {"step": 2, "x": 2}, {"step": 3, "x": 3.0}]
    assert _truncate_after(run_dir / "metrics.jsonl", 2) == 2


def test_a_run_resumed_into_a_new_directory_starts_its_rows_after_the_checkpoint(tmp_path: Path) -> None:
    tracker = Tracker(["jsonl"], "p", "e", tmp_path / "new", {}, resume_step=3)  # another run's checkpoint
    tracker.restore_row({"x": 3.0}, step=3)
    tracker.log({"x": 4.0}, step=4)
    tracker.finish()
    assert [json.loads(line)["step"] for line in (tmp_path / "new" / "metrics.jsonl").read_text().splitlines()] == [4]
