"""Deterministic runs compared with an uninterrupted reference run of the same config (real Ray + vLLM + DeepSpeed).

One reference run serves both tests: 4 deterministic GRPO steps with one mini-batch per step (exactly on-policy),
token-budget micro-batches and trimmed forwards, checkpoints at steps 2 and 4.
- A run killed with SIGKILL after its step-2 checkpoint and resumed logs the reference's steps 3 and 4 (contract 5).
- Issue 13 (no redundant pass): the reference takes its old log-probs from the update's own forward
  (`actor.recompute_old_log_prob=auto`); a run with the separate pass (`always`) logs the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from runs import kill_at_checkpoint_then_resume, loads_in_vllm, metrics, run_to_end
from transformers import AutoModelForCausalLM

pytestmark = pytest.mark.slow

COMMON = [
    "trainer.total_steps=4",
    "trainer.save_freq=2",
    "trainer.deterministic=true",
    "actor.ppo_mini_batch_size=8",  # = data.train_batch_size: one optimizer step per RL step
    "actor.max_tokens_per_micro_batch=48",
    "model.padding_free=trim",
]
COMPARED = [
    "critic/score/mean",
    "actor/pg_loss",
    "actor/entropy",
    "actor/kl_loss",
    "actor/grad_norm",
    "actor/pg_clipfrac",
    "actor/ppo_kl",
    "rollout/entropy",
    "rollout/logprob_diff_max",
    "response_length/mean",
]


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict]:
    """The uninterrupted run's metrics by step (old log-probs from the update's forward)."""
    tmp = tmp_path_factory.mktemp("reference")
    proc = run_to_end(tiny_model_dir, tmp / "out", tmp / "data", *COMMON, log=tmp / "run.log")
    assert proc.returncode == 0, (tmp / "run.log").read_text()[-3000:]
    rows = metrics(tmp / "out")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert not any("timing_s/old_log_prob" in row for row in rows)  # no separate pass
    return {row["step"]: row for row in rows}


def assert_same(row: dict, expected: dict, rel: float) -> None:
    for key in COMPARED:
        assert row[key] == pytest.approx(expected[key], rel=rel, abs=1e-6), (row["step"], key)


def test_sigkill_then_resume_gives_the_same_metrics(
    reference: dict[int, dict], tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    log = kill_at_checkpoint_then_resume(tiny_model_dir, out, tmp_path / "data", *COMMON, logs=tmp_path, step=2)
    assert "resumed from" in log
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # no step lost, none logged twice
    for row in rows[2:]:
        assert_same(row, reference[row["step"]], rel=1e-5)
    hf = out / "rlhf" / "grpo_arith_tiny" / "checkpoints" / "step_00000004" / "hf"
    AutoModelForCausalLM.from_pretrained(hf)  # the checkpoint's policy loads directly in transformers ...
    assert loads_in_vllm(hf)  # ... and in vLLM


def test_on_policy_update_gives_the_same_metrics_without_the_separate_pass(
    reference: dict[int, dict], tiny_model_dir: Path, tmp_path: Path
) -> None:
    proc = run_to_end(
        tiny_model_dir,
        tmp_path / "out",
        tmp_path / "data",
        *COMMON,
        "actor.recompute_old_log_prob=always",
        log=tmp_path / "run.log",
    )
    assert proc.returncode == 0, (tmp_path / "run.log").read_text()[-3000:]
    rows = metrics(tmp_path / "out")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        assert "timing_s/old_log_prob" in row  # the separate pass ran
        assert_same(row, reference[row["step"]], rel=1e-4)
        assert row["rollout/logprob_diff_max"] < 1e-3
