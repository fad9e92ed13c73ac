"""Ray start-up, resource pools and the typed worker groups the trainer talks to.

`start_ray` joins a running cluster ($RAY_ADDRESS, or `trainer.ray_address`) or starts a local one. The group
classes give every worker method a typed signature on the controller side, so the trainer reads like
single-process code and a type checker sees every call.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import ray
import torch

from rlhf.batch import Batch
from rlhf.config import RLHFConfig
from rlhf.workers.critic import CriticWorker
from rlhf.workers.group import ResourcePool, WorkerGroup
from rlhf.workers.hybrid import ActorRolloutRefWorker
from rlhf.workers.reward import RewardWorker
from rlhf.workers.reward_model import RewardModelWorker

logger = logging.getLogger(__name__)


def resolve_device(requested: str) -> str:
    """`trainer.device=auto` picks CUDA when the driver sees a GPU, else CPU."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu or auto")
    return requested


def worker_env(cfg: RLHFConfig, device: str) -> dict[str, str]:
    """Environment variables every worker process needs before it imports DeepSpeed or vLLM."""
    threads = str(max(1, int(cfg.trainer.cpus_per_worker)))
    env = {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # vLLM in this process: weight sync without copies
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": threads,
        "PYTHONUNBUFFERED": "1",
    }
    if device == "cpu":
        env["DS_ACCELERATOR"] = "cpu"
        env["VLLM_CPU_KVCACHE_SPACE"] = str(cfg.rollout.kv_cache_gb)
    return env


def start_ray(cfg: RLHFConfig) -> None:
    """Connect to a cluster if one is named, else start a local Ray sized to the job."""
    if ray.is_initialized():
        return
    address = cfg.trainer.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        logger.info("connected to Ray cluster at %s", address)
        return
    world = cfg.trainer.nnodes * cfg.trainer.num_devices_per_node
    num_cpus = max(os.cpu_count() or 1, int(world * cfg.trainer.cpus_per_worker) + 1)
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    logger.info("started a local Ray instance with %d CPUs", num_cpus)


class ActorRolloutRefGroup(WorkerGroup):
    """The colocated policy group: typed wrappers over `ActorRolloutRefWorker`'s dispatched methods."""

    def init_model(self) -> None:
        self.call("init_model")

    def generate(self, prompts: Batch, temperature: float | None = None, n: int | None = None) -> Batch:
        return self.call("generate", prompts, temperature=temperature, n=n)

    def compute_log_prob(self, batch: Batch) -> Batch:
        return self.call("compute_log_prob", batch)

    def compute_ref_log_prob(self, batch: Batch) -> Batch:
        return self.call("compute_ref_log_prob", batch)

    def update_actor(self, batch: Batch) -> dict[str, float]:
        return self.call("update_actor", batch)[0]  # metrics are reduced over ranks: rank 0 speaks for all

    def sync_weights(self) -> float:
        return max(self.call("sync_weights"))

    def save_hf_model(self, path: str) -> None:
        self.call("save_hf_model", path)

    def save_checkpoint(self, directory: str) -> None:
        self.call("save_checkpoint", directory)

    def load_checkpoint(self, directory: str) -> None:
        self.call("load_checkpoint", directory)


class RewardGroup(WorkerGroup):
    def compute_score(self, batch: Batch) -> Batch:
        return self.call("compute_score", batch)

    def close(self) -> None:
        self.call("close")


class RewardModelGroup(WorkerGroup):
    def compute_rm_score(self, batch: Batch) -> Batch:
        return self.call("compute_rm_score", batch)


class CriticGroup(WorkerGroup):
    def init_model(self) -> None:
        self.call("init_model")

    def compute_values(self, batch: Batch) -> Batch:
        return self.call("compute_values", batch)

    def update_critic(self, batch: Batch) -> dict[str, float]:
        return self.call("update_critic", batch)[0]  # reduced over ranks

    def save_checkpoint(self, directory: str) -> None:
        self.call("save_checkpoint", directory)

    def load_checkpoint(self, directory: str) -> None:
        self.call("load_checkpoint", directory)


@dataclass
class Groups:
    """Every worker group of a run; critic and reward_model exist only when the config asks for them."""

    policy: ActorRolloutRefGroup
    reward: RewardGroup
    critic: CriticGroup | None = None
    reward_model: RewardModelGroup | None = None


def create_groups(cfg: RLHFConfig) -> Groups:
    """Reserve the resource pools and start every group the config needs, models built and ready.

    On CPU the critic and reward model share the policy's bundles (they run between the policy's stages); on CUDA
    each gets its own pool of GPUs.
    """
    device = resolve_device(cfg.trainer.device)
    env = worker_env(cfg, device)
    world = cfg.trainer.nnodes * cfg.trainer.num_devices_per_node
    pool = ResourcePool.create(world, cfg.trainer.cpus_per_worker, device)
    policy = ActorRolloutRefGroup(
        ActorRolloutRefWorker,
        pool,
        "actor_rollout_ref",
        dict(cfg=cfg, device=device, need_ref=cfg.algorithm.needs_ref()),
        env,
    )
    # Reward actors take a sliver of CPU: their processes run between the policy's stages, not during them.
    reward_pool = ResourcePool.create(cfg.reward.num_workers, 0.01, "cpu")
    groups = Groups(
        policy, RewardGroup(RewardWorker, reward_pool, "reward", dict(cfg=cfg), env, init_distributed=False)
    )
    shared = pool if device == "cpu" else None
    share_cpus = 0.0 if device == "cpu" else None
    if cfg.algorithm.needs_critic():
        critic_pool = shared or ResourcePool.create(world, cfg.trainer.cpus_per_worker, device)
        groups.critic = CriticGroup(
            CriticWorker, critic_pool, "critic", dict(cfg=cfg, device=device), env, cpus_per_actor=share_cpus
        )
    if cfg.reward.model_path is not None:
        rm_pool = shared or ResourcePool.create(world, cfg.trainer.cpus_per_worker, device)
        groups.reward_model = RewardModelGroup(
            RewardModelWorker,
            rm_pool,
            "reward_model",
            dict(cfg=cfg, policy_tokenizer_path=cfg.model.path),
            env,
            init_distributed=False,
            cpus_per_actor=share_cpus,
        )
    policy.init_model()
    if groups.critic is not None:
        groups.critic.init_model()
    return groups
