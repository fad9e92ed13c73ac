"""Every algorithm recipe for 2 steps on CPU through real Ray + vLLM + DeepSpeed (2 actor ranks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runs import tiny_overrides

from recipes import compose_recipe
from rlhf.main import run
from rlhf.models.tiny import build_tiny_reward_model

pytestmark = pytest.mark.slow

ALGORITHM_RECIPES = ["ppo", "rloo", "reinforce_pp", "remax", "drgrpo", "dapo", "gspo", "cispo"]


def run_recipe(name: str, tiny_model_dir: Path, tmp_path: Path, *overrides: str) -> list[dict]:
    cfg = compose_recipe(
        name,
        [*tiny_overrides(tiny_model_dir, tmp_path / "out", tmp_path / "data"), "trainer.total_steps=2", *overrides],
    )
    run(cfg)
    metrics = tmp_path / "out" / cfg.trainer.project_name / cfg.trainer.experiment_name / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert row["rollout/logprob_diff_max"] < 1e-3, row["rollout/logprob_diff_max"]
        assert "actor/grad_norm" not in row or row["actor/grad_norm"] > 0, row
    assert rows[-1]["actor/grad_norm"] > 0
    return rows


# Extra overrides per recipe. Dr. GRPO's run also carries the rollout-correction check (one driver start for two
# behaviours): truncated importance sampling against vLLM's log-probs.
EXTRA_OVERRIDES = {"ppo": ["critic.warmup_steps=1"], "drgrpo": ["algorithm.rollout_is=sequence"]}


@pytest.mark.parametrize("algorithm", ALGORITHM_RECIPES)
def test_algorithm_recipe_two_steps(algorithm: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = run_recipe(f"{algorithm}_arith_tiny", tiny_model_dir, tmp_path, *EXTRA_OVERRIDES.get(algorithm, []))
    last = rows[-1]
    if algorithm == "ppo":
        assert "critic/vf_loss" in last and "critic/values/mean" in last and "timing_s/update_critic" in last
        assert "actor/reward_kl_penalty_coeff" in last
        # Critic warm-up: step 1 trains only the critic, the actor starts at step 2.
        assert "actor/pg_loss" not in rows[0] and "critic/vf_loss" in rows[0] and "actor/pg_loss" in last
    if algorithm == "remax":
        assert "timing_s/gen_baseline" in last
    if algorithm == "dapo":
        assert last["dapo/num_gen_batches"] >= 1 and "dapo/num_dropped_groups" in last
    if algorithm == "drgrpo":
        weight_keys = [k for k in last if k.startswith("rollout_corr/")]
        assert weight_keys, last.keys()
        # Right after a sync the two log-probs agree, so the sequence-level weights are ~1.
        mean_key = next(k for k in weight_keys if k.endswith("mean"))
        assert abs(last[mean_key] - 1.0) < 1e-2


def test_reward_model_recipe(tiny_model_dir: Path, tmp_path: Path) -> None:
    rm = build_tiny_reward_model(tmp_path / "tiny-rm")
    rows = run_recipe("grpo_rm_arith_tiny", tiny_model_dir, tmp_path, f"reward.model_path={rm}")
    assert rows[-1]["critic/score/max"] != rows[-1]["critic/score/min"]  # the RM's scores vary
