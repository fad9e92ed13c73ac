"""Issue 13: an exactly on-policy update takes its old log-probs from its own forward, and nothing else changes.

Two runs of the tiny recipe with one mini-batch per step (train_batch_size == ppo_mini_batch_size, one epoch), token-
budget micro-batches and trimmed forwards: `actor.recompute_old_log_prob=always` (a separate pass) and `auto` (the
update's forward). Every logged number must agree; only the separate pass's own timing disappears.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from runs import metrics, start_run

pytestmark = pytest.mark.slow

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


def test_on_policy_update_gives_the_same_metrics_without_the_separate_pass(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    common = [
        "trainer.total_steps=2",
        "trainer.deterministic=true",
        "actor.ppo_mini_batch_size=8",  # = data.train_batch_size: one optimizer step per RL step
        "actor.max_tokens_per_micro_batch=48",
        "model.padding_free=trim",
    ]
    # Both runs side by side (each its own local Ray and data folder): one's single-threaded start-up fills the
    # other's idle core, and deterministic runs do not depend on timing.
    procs = {
        mode: start_run(
            tiny_model_dir,
            tmp_path / mode,
            tmp_path / f"data_{mode}",
            *common,
            f"actor.recompute_old_log_prob={mode}",
            log=tmp_path / f"{mode}.log",
        )  # fmt: skip
        for mode in ("always", "auto")
    }
    runs = {}
    for mode, proc in procs.items():
        proc.wait(timeout=600)
        assert proc.returncode == 0, (tmp_path / f"{mode}.log").read_text()[-3000:]
        runs[mode] = metrics(tmp_path / mode)
    assert all("timing_s/old_log_prob" in row for row in runs["always"])
    assert not any("timing_s/old_log_prob" in row for row in runs["auto"])
    for separate, fused in zip(runs["always"], runs["auto"], strict=True):
        assert separate["step"] == fused["step"]
        for key in COMPARED:
            assert fused[key] == pytest.approx(separate[key], rel=1e-4, abs=1e-6), (separate["step"], key)
        assert fused["rollout/logprob_diff_max"] < 1e-3
