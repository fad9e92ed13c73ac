"""One actor rank for the loss-invariance tests: real DeepSpeed updates on a fixed batch, weights saved by rank 0.

Run as: python actor_update_worker.py <model_dir> <world_size> <port> <rank> <cases.json>
`cases.json` lists the updates to make, one fresh Actor each, in this one process group (so a test pays the
process start and the rendezvous once per world size): [{"out": path, "micro": micro-batch size, "mode":
loss_agg_mode, "overrides": [extra config overrides, e.g. "actor.zero_stage=1"]}, ...].
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

os.environ["DS_ACCELERATOR"] = "cpu"

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from rlhf.workers.actor import Actor  # noqa: E402

from recipes import compose_recipe  # noqa: E402
from rlhf.batch import Batch  # noqa: E402
from rlhf.config import RLHFConfig  # noqa: E402
from rlhf.sequences import assemble  # noqa: E402

NUM_SEQS, RESPONSE_LEN = 8, 6


def fixed_batch(vocab: int) -> Batch:
    """8 sequences with different prompt and response lengths (one empty response), fixed by a seed."""
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(2, vocab, (3 + i % 3,), generator=g).tolist() for i in range(NUM_SEQS)]
    responses = [torch.randint(2, vocab, (i % (RESPONSE_LEN + 1),), generator=g).tolist() for i in range(NUM_SEQS)]
    batch = assemble(prompts, responses, 6, RESPONSE_LEN, pad_id=0)
    batch["old_log_probs"] = -torch.rand(NUM_SEQS, RESPONSE_LEN, generator=g) * 5
    batch["advantages"] = torch.randn(NUM_SEQS, RESPONSE_LEN, generator=g) * batch["response_mask"]
    return batch


def update_config(model_dir: str, micro: int, overrides: list[str]) -> RLHFConfig:
    """The tiny recipe for one SGD step (lr=1, no clipping, no KL) on the fixed batch, plus `overrides`."""
    return compose_recipe(
        "grpo_arith_tiny",
        [
            f"model.path={model_dir}",
            "rollout.n=1",
            f"data.train_batch_size={NUM_SEQS}",
            f"actor.ppo_mini_batch_size={NUM_SEQS}",
            f"actor.micro_batch_size_per_device={micro}",
            "actor.shuffle=false",
            "actor.optim.name=SGD",
            "actor.optim.lr=1.0",
            "actor.optim.grad_clip=0",
            "algorithm.use_kl_loss=false",
            f"rollout.max_response_length={RESPONSE_LEN}",
            "algorithm.entropy_coeff=0.01",
            *overrides,
        ],
    )


def update_once(model_dir: str, world: int, rank: int, micro: int, mode: str, overrides: list[str]) -> dict:
    """One fresh actor (seed 0), one update on this rank's shard of the fixed batch; the updated weights."""
    cfg = update_config(model_dir, micro, [f"algorithm.loss_agg_mode={mode}", *overrides])
    torch.manual_seed(0)
    actor = Actor(cfg, rank, world, torch.device("cpu"))
    shard = fixed_batch(actor.model.config.vocab_size).split(world)[rank]
    actor.update(shard)
    return {k: v.clone() for k, v in actor.model.state_dict().items()}


def main() -> None:
    model_dir, world, port, rank, cases = sys.argv[1:6]
    world, rank = int(world), int(rank)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK="0")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    for case in json.loads(Path(cases).read_text()):
        weights = update_once(model_dir, world, rank, case["micro"], case["mode"], case["overrides"])
        if rank == 0:
            torch.save(weights, case["out"])
        gc.collect()  # the previous case's engine and its hooks go before the next one is built
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
