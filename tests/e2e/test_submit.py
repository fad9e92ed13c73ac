"""scripts/submit.sh against a real Ray head (`ray start --head --block`, ended by its pid): the tiny recipe with the
README's relative paths, and a planted WANDB_API_KEY that must not reach the job's metadata, command line or logs."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: `ray`, and the `python` the job runs with
PLANTED_KEY = "planted" + "0123456789abcdef" * 2 + "0123"  # 40 characters, like a real key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_head(head: subprocess.Popen) -> None:
    """End the head we started: `ray start --block` stops its processes on SIGTERM; anything left gets SIGKILL."""
    tree = [psutil.Process(head.pid), *psutil.Process(head.pid).children(recursive=True)]
    head.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=60)
    for proc in alive:
        proc.kill()
    psutil.wait_procs(alive, timeout=30)


def job_api(address: str, env: dict[str, str], expression: str, deadline_s: float = 0, head: Any = None) -> Any:
    """Evaluate `expression` over `c`, a JobSubmissionClient of `address`, in a fresh Python (JSON back): Ray fixes a
    process's authentication mode when it first reads it, and this test process may have read it before the test."""
    code = (
        "import json, sys; from ray.job_submission import JobSubmissionClient; "
        f"c = JobSubmissionClient({address!r}); print(json.dumps({expression}))"
    )
    deadline = time.monotonic() + deadline_s
    while True:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        if proc.returncode == 0:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        if time.monotonic() > deadline or (head is not None and head.poll() is not None):
            raise AssertionError(proc.stderr[-3000:])
        time.sleep(1)


def test_submit_with_relative_paths_and_no_key_in_job_metadata(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Token authentication, as Ray clusters run, with this test's own token (a head would otherwise switch it on by
    # itself when ~/.ray/auth_token exists): the head, this test's job client and submit.sh all use it.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "WANDB_MODE": "offline"}
    env.pop("RAY_ADDRESS", None)
    gcs_port, dashboard_port = free_port(), free_port()
    head = subprocess.Popen(
        [
            BIN / "ray",
            "start",
            "--head",
            "--block",
            f"--port={gcs_port}",
            f"--dashboard-port={dashboard_port}",
            "--include-dashboard=true",
            "--num-cpus=3",
            "--disable-usage-stats",
        ],  # fmt: skip
        env=env,
        cwd=tmp_path,
        stdout=(tmp_path / "head.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    # The README's relative paths, under this repo's (git-ignored) models/, data/ and outputs/ folders.
    name = f"submit-test-{uuid.uuid4().hex[:8]}"
    model, data, out = f"models/{name}", f"data/{name}", f"outputs/{name}"
    shutil.copytree(tiny_model_dir, ROOT / model)
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        job_api(address, env, "'up'", deadline_s=180, head=head)  # the head is up when its job API answers
        job = subprocess.run(
            [
                ROOT / "scripts" / "submit.sh",
                "grpo_arith_tiny",
                "trainer.total_steps=1",
                "trainer.test_freq=0",
                f"model.path={model}",
                "model.build_tiny=false",
                f"data.builtin_dir={data}",
                f"trainer.output_dir={out}",
                "trainer.logger=[console,jsonl]",
            ],  # fmt: skip
            env={**env, "RAY_ADDRESS": address, "WANDB_API_KEY": PLANTED_KEY},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "succeeded" in job.stdout + job.stderr
        assert "WANDB_API_KEY is not forwarded" in job.stderr
        metrics = ROOT / out / "rlhf" / "grpo_arith_tiny" / "metrics.jsonl"
        assert metrics.read_text().count('"step": 1') == 1  # the relative output_dir resolved in this checkout

        details, logs = job_api(
            address,
            env,
            f"[(str(j), c.get_job_logs(j.submission_id)) for j in c.list_jobs() if {name!r} in (j.entrypoint or '')][0]",
        )
        assert name in details
        assert PLANTED_KEY not in details and PLANTED_KEY not in logs
        assert PLANTED_KEY not in job.stdout + job.stderr
    finally:
        stop_head(head)
        for folder in (model, data, out):
            shutil.rmtree(ROOT / folder, ignore_errors=True)
