"""scripts/submit.sh against a real Ray head started with `ray start --head`: the tiny recipe, one step."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: `ray`, and the `python` the job runs with


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_submit_tiny_recipe_to_ray_head(tiny_model_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "WANDB_MODE": "offline"}
    env.pop("RAY_ADDRESS", None)
    gcs_port, dashboard_port = free_port(), free_port()
    subprocess.run(
        [
            BIN / "ray",
            "start",
            "--head",
            f"--port={gcs_port}",
            f"--dashboard-port={dashboard_port}",
            "--include-dashboard=true",
            "--num-cpus=3",
            "--disable-usage-stats",
        ],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=180,
    )
    try:
        job = subprocess.run(
            [
                ROOT / "scripts" / "submit.sh",
                "grpo_arith_tiny",
                "trainer.total_steps=1",
                "trainer.test_freq=0",
                f"model.path={tiny_model_dir}",
                "model.build_tiny=false",
                f"data.builtin_dir={tmp_path / 'data'}",
                f"trainer.output_dir={tmp_path / 'out'}",
                "trainer.logger=[console,jsonl]",
            ],
            env={**env, "RAY_ADDRESS": f"http://127.0.0.1:{dashboard_port}"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "succeeded" in job.stdout + job.stderr
        metrics = tmp_path / "out" / "rlhf" / "grpo_arith_tiny" / "metrics.jsonl"
        assert metrics.read_text().count('"step": 1') == 1
    finally:
        subprocess.run([BIN / "ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
