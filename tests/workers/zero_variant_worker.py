"""One actor rank for the ZeRO-3 / offload tests: old log-probs, one real DeepSpeed update on a fixed batch, new
log-probs; rank 0 saves the gathered weights and both log-prob tensors.

Run as: python zero_variant_worker.py <model_dir> <out.pt> <world_size> <port> <rank> <override>...
ZeRO-3 normally keeps small parameters whole (stage3_param_persistence_threshold, 1e5 elements), which would leave
the tiny model's LM head unpartitioned; the threshold is set to 0 here so every weight, the head included, is
partitioned and the fused path must gather it.
"""

from __future__ import annotations

import os
import sys

os.environ["DS_ACCELERATOR"] = "cpu"

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from actor_update_worker import fixed_batch, update_config  # noqa: E402
from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus  # noqa: E402
from rlhf.workers import actor as actor_module  # noqa: E402
from rlhf.workers.engine import deepspeed_config, gathered_state_dict  # noqa: E402


def config_without_persistence(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    config = deepspeed_config(*args, **kwargs)
    config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    return config


def main() -> None:
    model_dir, out, world, port, rank, *overrides = sys.argv[1:]
    world, rank = int(world), int(rank)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK="0")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    cfg = update_config(model_dir, 2, overrides)
    actor_module.deepspeed_config = config_without_persistence
    torch.manual_seed(0)
    actor = actor_module.Actor(cfg, rank, world, torch.device("cpu"))
    batch = fixed_batch(actor.model.config.vocab_size)
    shard = batch.split(world)[rank]
    head = actor.model.get_output_embeddings().weight
    partitioned = getattr(head, "ds_status", None) == ZeroParamStatus.NOT_AVAILABLE and head.numel() == 0
    before = actor.compute_log_prob(batch)["old_log_probs"]
    actor.update(shard)
    after = actor.compute_log_prob(batch)["old_log_probs"]
    weights = dict(gathered_state_dict(actor.model, cfg.actor.zero_stage))
    optimizer = actor.engine.optimizer  # what DeepSpeed's ZeRO optimizer actually does, not just the config
    offloaded = {
        "optimizer": bool(getattr(optimizer, "offload_optimizer", False) or getattr(optimizer, "cpu_offload", False)),
        "params": bool(getattr(optimizer, "offload_param", False)),
    }
    if rank == 0:
        result = {"weights": weights, "before": before, "after": after, "head_partitioned": partitioned}
        torch.save({**result, "offloaded": offloaded}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
