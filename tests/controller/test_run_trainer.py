"""rlhf.entry.run_trainer: which failures restart the worker groups (a dead worker, a failed weight sync) and how."""

from __future__ import annotations

from pathlib import Path

import pytest
from rlhf.workers.group import WorkerDiedError
from rlhf.workers.weight_transfer import WeightSyncError

from rlhf.entry import run_trainer


class ScriptedTrainer:
    """fit() raises the next scripted error, or returns metrics when none is left; records every call."""

    def __init__(self, resume: str, errors: list[Exception], calls: list[str]) -> None:
        self.resume, self.errors, self.calls = resume, errors, calls

    def setup(self) -> None:
        self.calls.append(f"setup({self.resume})")

    def fit(self) -> dict[str, float]:
        if self.errors:
            raise self.errors.pop(0)
        return {"step": 3.0}

    def cleanup(self) -> None:
        self.calls.append("cleanup")


def run(errors: list[Exception], max_restarts: int, tmp_path: Path) -> tuple[dict[str, float], list[str]]:
    calls: list[str] = []
    metrics = run_trainer(lambda resume: ScriptedTrainer(resume, errors, calls), "never", max_restarts, tmp_path)
    return metrics, calls


@pytest.mark.parametrize(
    "error", [WorkerDiedError("rollout rank 0 died"), WeightSyncError("weight sync a -> b failed while syncing")]
)
def test_a_dead_worker_or_a_failed_sync_restarts_from_the_last_checkpoint(error: Exception, tmp_path: Path) -> None:
    metrics, calls = run([error], max_restarts=1, tmp_path=tmp_path)
    assert metrics == {"step": 3.0}
    assert calls == ["setup(never)", "cleanup", "setup(auto)", "cleanup"]


def test_restarts_are_bounded(tmp_path: Path) -> None:
    with pytest.raises(WeightSyncError, match="a -> b"):
        run([WeightSyncError("a -> b"), WeightSyncError("a -> b")], max_restarts=1, tmp_path=tmp_path)


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    calls: list[str] = []
    with pytest.raises(RuntimeError, match="NaN"):
        run_trainer(lambda r: ScriptedTrainer(r, [RuntimeError("NaN updates")], calls), "never", 3, tmp_path)
    assert calls == ["setup(never)", "cleanup"]
