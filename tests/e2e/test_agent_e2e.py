"""Agentic RL end to end on CPU through real Ray + vLLM + DeepSpeed: multi-turn episodes (the guessing game), 2 steps
with 2 actor ranks. Contract 2 over every sampled token of every turn: the trainer's log-probs of the tokens vLLM
sampled, scored in context with the observation tokens between turns, agree with vLLM's within 1e-3 (fp32)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipes import compose_recipe
from rlhf.main import run

pytestmark = pytest.mark.slow

AGENT_METRICS = [
    "agent/num_turns/mean",
    "agent/num_turns/max",
    "agent/tool_calls/mean",
    "agent/tool_errors",
    "agent/tool_timeouts",
    "agent/env_reward/mean",
    "agent/finish/answer",
    "timing_s/tools",
]


def test_agent_guess_number_two_steps_two_ranks(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = compose_recipe(
        "agent_guess_tiny",
        [
            f"model.path={tiny_model_dir}",
            "model.build_tiny=false",
            f"data.builtin_dir={tmp_path / 'data'}",
            "data.builtin_num_val=16",  # validation plays every held-out episode twice (steps 0 and 2): keep it short
            f"trainer.output_dir={tmp_path / 'out'}",
            "trainer.total_steps=2",
            "trainer.test_freq=2",
            "trainer.logger=[console,jsonl]",
            "actor.optim.lr=1e-3",
            # A random model rarely writes a newline: end its turns at every digit (its guess), so episodes have
            # several turns and observations ("Higher." / "Lower." / "Answer with a number.") sit between them.
            'agent.stop=["0","1","2","3","4","5","6","7","8","9"]',
        ],
    )
    run(cfg)
    run_dir = tmp_path / "out" / cfg.trainer.project_name / cfg.trainer.experiment_name
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert "val-core/guess_number/acc/mean@1" in rows[0] and "val-aux/agent/num_turns/mean" in rows[0]
    for row in rows[1:]:
        missing = [k for k in AGENT_METRICS if k not in row]
        assert not missing, f"step {row['step']} lacks {missing}"
        assert row["agent/num_turns/mean"] > 1.5, row["agent/num_turns/mean"]  # multi-turn episodes
        # Observation tokens are in the responses (attended to) but not trained on.
        assert row["agent/model_tokens/mean"] < row["response_length/mean"]
        # Step 2 samples right after a weight sync: agreement there shows vLLM got the trained weights.
        assert row["rollout/logprob_diff_max"] < 1e-3, row["rollout/logprob_diff_max"]
        assert row["actor/grad_norm"] > 0
    assert (run_dir / "final_model" / "config.json").exists()
