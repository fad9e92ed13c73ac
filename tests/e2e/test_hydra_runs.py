"""Hydra as users drive it: a 2-job sweep (`-m`) gives each job its own run dir, log and checkpoints, and a failed
invocation leaves an earlier good run's `.hydra/` untouched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from runs import ROOT, tiny_overrides

pytestmark = pytest.mark.slow


def test_sweep_jobs_get_their_own_run_dirs_and_logs(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [sys.executable, "-m", "rlhf.main", "--config-name", "grpo_arith_tiny", "-m"]
    args += [*tiny_overrides(tiny_model_dir, out, tmp_path / "data"), "trainer.total_steps=1", "trainer.save_freq=1"]
    args += ["actor.optim.lr=1e-4,2e-4"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    (sweep,) = (out / "rlhf" / "grpo_arith_tiny" / "multirun").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    learning_rates = set()
    for job in jobs:
        rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "critic/score/mean" in r] == [1]
        assert (job / "final_model" / "config.json").is_file()
        assert (job / "checkpoints" / "step_00000001" / "COMPLETE").is_file()
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        learning_rates.add(
            float(next(line.split("=")[1] for line in overrides.splitlines() if "actor.optim.lr=" in line))
        )
        log = (job / "main.log").read_text()
        assert "step 1 |" in log, log[-2000:]  # the run's own log lines reach Hydra's log file
    assert learning_rates == {1e-4, 2e-4}  # Hydra writes a swept float as it parsed it (0.0001)
    # Nothing of either job was written to the single-run directory.
    assert not (out / "rlhf" / "grpo_arith_tiny" / "metrics.jsonl").exists()

    # A failed invocation (a bad value) keeps its own .hydra/, leaving the sweep's and any earlier run's alone.
    before = {p: p.read_text() for p in sweep.rglob(".hydra/*.yaml")}
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlhf.main",
            "--config-name",
            "grpo_arith_tiny",
            *tiny_overrides(tiny_model_dir, out, tmp_path / "data"),
            "rollout.n=0",
        ],  # fmt: skip
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "rollout.n=0 must be >= 1" in bad.stderr
    assert "Traceback" not in bad.stderr  # a config error prints its message alone
    assert {p: p.read_text() for p in sweep.rglob(".hydra/*.yaml")} == before
    (invocation,) = (out / "rlhf" / "grpo_arith_tiny" / "hydra").iterdir()
    assert "rollout.n=0" in (invocation / ".hydra" / "overrides.yaml").read_text()
