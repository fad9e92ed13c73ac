"""The SFT entry point end to end: 2 data-parallel ranks through Ray, metrics, validation and the saved model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sft_main_trains_validates_and_saves(tiny_model_dir: Path, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "rlhf.sft_main",
        "--config-name",
        "sft_arith_tiny",
        f"model.path={tiny_model_dir}",
        "model.build_tiny=false",
        f"data.builtin_dir={tmp_path / 'data'}",
        "data.builtin_num_train=256",
        "data.builtin_num_val=32",
        "sft.total_steps=6",
        "sft.batch_size=32",
        "sft.micro_batch_size_per_device=8",
        "trainer.test_freq=3",
        f"trainer.output_dir={tmp_path / 'out'}",
        "trainer.logger=[console,jsonl]",
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}
    result = subprocess.run(
        [*cmd, "trainer.save_freq=3"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "out" / "rlhf_sft" / "sft_arith_tiny"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 5, 6]  # step 0: validation of the initial model
    assert "val-core/arith/acc/mean@1" in rows[0] and "val/loss" in rows[0]
    train = rows[1:]
    assert train[-1]["train/loss"] < train[0]["train/loss"]
    assert "val-core/arith/acc/mean@1" in train[2] and "val/loss" in train[5]
    assert (run_dir / "final_model" / "config.json").is_file()
    assert (run_dir / "final_model" / "tokenizer.json").is_file()
    assert [p.name for p in sorted((run_dir / "checkpoints").glob("step_*"))] == ["step_00000003", "step_00000006"]

    # The same command with more steps continues from the step-6 checkpoint, as an RL run does.
    cmd[cmd.index("sft.total_steps=6")] = "sft.total_steps=8"
    result = subprocess.run(
        [*cmd, "trainer.save_freq=3"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed SFT from" in result.stderr and "step_00000006" in result.stderr
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4, 5, 6, 7, 8]  # nothing lost or repeated


def test_config_error_fails_before_ray_starts(tiny_model_dir: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "rlhf.sft_main",
        "--config-name",
        "sft_arith_tiny",
        f"model.path={tiny_model_dir}",
        "model.build_tiny=false",
        "trainer.total_steps=3",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "trainer.total_steps=3 is not used by SFT; set sft.total_steps instead" in result.stderr
