"""One LoRA policy rank in this process (DeepSpeed + in-process vLLM, no Ray): generate, score, update, sync, again.

Run as: python lora_policy_worker.py <model_dir> <out.json> <sync: adapter|merged> <port>
Writes the log-prob gaps between vLLM and the trainer before and after an update, the bytes each sync sent, and how
far the update moved the policy.
"""

from __future__ import annotations

import os
import sys

os.environ.update(
    DS_ACCELERATOR="cpu", VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_KVCACHE_SPACE="1", OMP_NUM_THREADS="1"
)

import json  # noqa: E402

import torch  # noqa: E402
from rlhf.workers.hybrid import ActorRolloutRefWorker  # noqa: E402

from recipes import compose_recipe  # noqa: E402
from rlhf.batch import Batch  # noqa: E402
from rlhf.data import make_arith_rows  # noqa: E402
from rlhf.prompts import rows_to_batch  # noqa: E402


def logprob_gap(batch: Batch, old_log_probs: torch.Tensor) -> float:
    """Largest |trainer - vLLM| log-prob over the sampled response tokens."""
    mask = batch["response_mask"].bool()
    return (old_log_probs - batch["rollout_log_probs"])[mask].abs().max().item()


def main() -> None:
    model_dir, out, sync, port = sys.argv[1:5]
    cfg = compose_recipe(
        "grpo_arith_tiny",
        [
            f"model.path={model_dir}",
            "model.build_tiny=false",
            "trainer.num_devices_per_node=1",
            "actor.optim.lr=2e-2",
            "actor.lora.rank=8",
            "actor.lora.alpha=16",
            f"actor.lora.sync={sync}",
        ],
    )
    worker = ActorRolloutRefWorker("actor_rollout_ref", 0, 1, cfg, "cpu", need_ref=True)
    worker.init_distributed("127.0.0.1", int(port), "gloo")
    worker.init_model()
    prompts = rows_to_batch(
        make_arith_rows(8, seed=0, min_digits=1, max_digits=2), worker.tokenizer, cfg.data.max_prompt_length, 1, 1
    )
    result: dict[str, float] = {}
    batch = worker.generate(prompts)
    batch.update(worker.compute_log_prob(batch))
    batch.update(worker.compute_ref_log_prob(batch))
    result["gap_before"] = logprob_gap(batch, batch["old_log_probs"])
    mask = batch["response_mask"].bool()
    result["ref_vs_policy_before"] = (batch["ref_log_probs"] - batch["old_log_probs"])[mask].abs().max().item()
    batch["advantages"] = torch.randn(batch["response_mask"].shape, generator=torch.Generator().manual_seed(0))
    worker.update_actor(batch)
    result["bytes"] = worker.sync_weights()["perf/update_weights_bytes"]

    after = worker.generate(prompts)
    after.update(worker.compute_log_prob(after))
    result["gap_after"] = logprob_gap(after, after["old_log_probs"])
    after.update(worker.compute_ref_log_prob(after))
    mask = after["response_mask"].bool()
    result["ref_vs_policy_after"] = (after["ref_log_probs"] - after["old_log_probs"])[mask].abs().max().item()
    result["adapter_bytes"] = float(sum(p.numel() * 4 for p in worker.actor.model.parameters() if p.requires_grad))
    result["has_ref_copy"] = float(hasattr(worker.ref, "model"))
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
