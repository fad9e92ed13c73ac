import json
from pathlib import Path

import pytest

from rlhf.checkpoint import CheckpointManager, checkpoint_step, is_complete
from rlhf.tracking import _truncate_after


def write_files(directory: Path) -> None:
    (directory / "state.json").write_text("{}")


def test_save_marks_complete_and_keeps_last_k(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        path = manager.save(step, write_files)
        assert is_complete(path) and checkpoint_step(path) == step
    assert [p.name for p in manager.complete_checkpoints()] == ["step_00000002", "step_00000003"]
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())


def test_incomplete_and_half_written_checkpoints_are_skipped(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=0)
    manager.save(2, write_files)
    (tmp_path / "step_00000004").mkdir()  # renamed but never marked complete (impossible by design, still skipped)
    (tmp_path / "step_00000004" / "state.json").write_text("{")
    (tmp_path / ".tmp-step_00000006").mkdir()  # a crash while saving
    assert manager.latest() == tmp_path / "step_00000002"
    assert manager.resolve("auto") == tmp_path / "step_00000002"
    assert manager.resolve("never") is None
    with pytest.raises(ValueError, match="trainer.resume=.*not a complete checkpoint"):
        manager.resolve(str(tmp_path / "step_00000004"))


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


def test_metrics_after_the_checkpoint_are_dropped_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "x": s}) + "\n" for s in (1, 2, 3)))
    _truncate_after(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
