"""Helpers for end-to-end tests that run `python -m rlhf.main` as a real driver process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
REWARD_FNS = Path(__file__).with_name("reward_fns.py")


def tiny_overrides(tiny_model_dir: Path, out_dir: Path, data_dir: Path) -> list[str]:
    """The session's tiny model, a dense reward plugin (a random model never solves arithmetic), no validation,
    jsonl metrics under `out_dir`, and a learning rate large enough to move the policy visibly."""
    return [
        f"model.path={tiny_model_dir}",
        "model.build_tiny=false",
        f"data.builtin_dir={data_dir}",
        f"reward.function={REWARD_FNS}:digit_fraction",
        "trainer.test_freq=0",
        "trainer.logger=[console,jsonl]",
        f"trainer.output_dir={out_dir}",
        "actor.optim.lr=1e-3",
    ]


def start_run(
    tiny_model_dir: Path, out_dir: Path, data_dir: Path, *overrides: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """The tiny GRPO recipe as a driver subprocess (its own process group), output to `log`; `env` adds variables
    (its local Ray's workers inherit them)."""
    args = [sys.executable, "-m", "rlhf.main", "--config-name", "grpo_arith_tiny"]
    args += [*tiny_overrides(tiny_model_dir, out_dir, data_dir), *overrides]
    return subprocess.Popen(
        args,
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def run_to_end(*args: object, timeout: float = 600, **kwargs: object) -> subprocess.Popen:
    proc = start_run(*args, **kwargs)
    proc.wait(timeout=timeout)
    return proc


def metrics(out_dir: Path, experiment: str = "grpo_arith_tiny") -> list[dict]:
    path = out_dir / "rlhf" / experiment / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise TimeoutError(f"gave up waiting for {what} after {timeout} s")


def ray_processes(name: str, driver: subprocess.Popen) -> list[psutil.Process]:
    """Live processes titled `ray::<name>` (Ray renames its workers) started under `driver`'s local Ray, so a test
    never touches another run's workers."""
    found = []
    try:
        descendants = psutil.Process(driver.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    for proc in descendants:
        try:
            if " ".join(proc.cmdline()).startswith(f"ray::{name}"):
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


VLLM_SMOKE = """
import os, sys
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
from vllm import LLM, SamplingParams
llm = LLM(model=sys.argv[1], dtype="float32", enforce_eager=True, max_model_len=64)
out = llm.generate(["1+2="], SamplingParams(temperature=0.0, max_tokens=4), use_tqdm=False)
print("VLLM_OK", len(out[0].outputs[0].token_ids))
"""


def loads_in_vllm(model_dir: Path) -> bool:
    """Whether a fresh vLLM engine loads `model_dir` and generates from it."""
    proc = subprocess.run(
        [sys.executable, "-c", VLLM_SMOKE, str(model_dir)], capture_output=True, text=True, timeout=300
    )
    return proc.returncode == 0 and "VLLM_OK" in proc.stdout


def kill_tree(driver: subprocess.Popen) -> None:
    """SIGKILL the driver and every process it started (its local Ray: GCS, raylet, workers), without clean-up."""
    try:
        tree = [psutil.Process(driver.pid), *psutil.Process(driver.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in tree:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(tree, timeout=30)


def kill_at_checkpoint_then_resume(
    tiny_model_dir: Path, out_dir: Path, data_dir: Path, *overrides: str, logs: Path, step: int, timeout: float = 600
) -> str:
    """Start a run, SIGKILL it (driver and its local Ray) once its step-`step` checkpoint is complete, then run the same
    command to the end; returns the resumed run's log (asserting it exited 0)."""
    proc = start_run(tiny_model_dir, out_dir, data_dir, *overrides, log=logs / "killed.log")
    checkpoint = out_dir / "rlhf" / "grpo_arith_tiny" / "checkpoints" / f"step_{step:08d}" / "COMPLETE"
    wait_for(checkpoint.exists, timeout=timeout, what=f"the step-{step} checkpoint")
    kill_tree(proc)  # no clean-up of any kind
    proc.wait(timeout=30)
    resumed = run_to_end(tiny_model_dir, out_dir, data_dir, *overrides, log=logs / "resumed.log", timeout=timeout)
    log = (logs / "resumed.log").read_text()
    assert resumed.returncode == 0, log[-3000:]
    return log
