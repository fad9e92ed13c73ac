"""Resource pools and the typed worker groups the RL trainer talks to (Ray start-up is in rlhf.ray_setup).

The group classes give every worker method a typed signature on the controller side, so the trainer reads like
single-process code and a type checker sees every call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rlhf.batch import Batch
from rlhf.config import RLHFConfig
from rlhf.ray_setup import resolve_device, worker_env
from rlhf.workers.critic import CriticWorker
from rlhf.workers.group import ResourcePool, WorkerGroup
from rlhf.workers.hybrid import ActorRolloutRefWorker
from rlhf.workers.reward import RewardWorker
from rlhf.workers.reward_model import RewardModelWorker

logger = logging.getLogger(__name__)


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
    env = worker_env(cfg.trainer, device, cfg.rollout.kv_cache_gb)
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
