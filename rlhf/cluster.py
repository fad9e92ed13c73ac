"""The typed worker groups the RL trainer talks to, and `create_groups` (Ray start-up is in rlhf.ray_setup).

Each group class wraps its worker's dispatched methods one line each (`self.call(Worker.method, ...)`), so the
trainer reads like single-process code and an IDE or a type checker follows every call to the worker;
tests/workers/test_dispatch.py fails when a wrapper and its worker method disagree.
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
    """The colocated policy group: one typed wrapper per dispatched method of `ActorRolloutRefWorker`."""

    worker_cls = ActorRolloutRefWorker

    def init_model(self) -> None:
        self.call(ActorRolloutRefWorker.init_model)

    def generate(self, batch: Batch, temperature: float | None = None, n: int | None = None) -> Batch:
        return self.call(ActorRolloutRefWorker.generate, batch, temperature=temperature, n=n)

    def compute_log_prob(self, batch: Batch) -> Batch:
        return self.call(ActorRolloutRefWorker.compute_log_prob, batch)

    def compute_ref_log_prob(self, batch: Batch) -> Batch:
        return self.call(ActorRolloutRefWorker.compute_ref_log_prob, batch)

    def update_actor(self, batch: Batch) -> Batch:
        return self.call(ActorRolloutRefWorker.update_actor, batch)

    def sync_weights(self) -> dict[str, float]:
        return self.call(ActorRolloutRefWorker.sync_weights)

    def save_hf_model(self, path: str) -> None:
        self.call(ActorRolloutRefWorker.save_hf_model, path)

    def save_checkpoint(self, directory: str) -> None:
        self.call(ActorRolloutRefWorker.save_checkpoint, directory)

    def load_checkpoint(self, directory: str) -> None:
        self.call(ActorRolloutRefWorker.load_checkpoint, directory)


class RewardGroup(WorkerGroup):
    worker_cls = RewardWorker

    def compute_score(self, batch: Batch) -> Batch:
        return self.call(RewardWorker.compute_score, batch)

    def close(self) -> None:
        self.call(RewardWorker.close)


class RewardModelGroup(WorkerGroup):
    worker_cls = RewardModelWorker

    def compute_rm_score(self, batch: Batch) -> Batch:
        return self.call(RewardModelWorker.compute_rm_score, batch)


class CriticGroup(WorkerGroup):
    worker_cls = CriticWorker

    def init_model(self) -> None:
        self.call(CriticWorker.init_model)

    def compute_values(self, batch: Batch) -> Batch:
        return self.call(CriticWorker.compute_values, batch)

    def update_critic(self, batch: Batch) -> dict[str, float]:
        return self.call(CriticWorker.update_critic, batch)

    def save_checkpoint(self, directory: str) -> None:
        self.call(CriticWorker.save_checkpoint, directory)

    def load_checkpoint(self, directory: str) -> None:
        self.call(CriticWorker.load_checkpoint, directory)


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
        pool,
        "actor_rollout_ref",
        dict(cfg=cfg, device=device, need_ref=cfg.algorithm.needs_ref()),
        env,
        balance_tokens=cfg.actor.balance_tokens,
    )
    # Reward actors take a sliver of CPU: their processes run between the policy's stages, not during them.
    reward_pool = ResourcePool.create(cfg.reward.num_workers, 0.01, "cpu")
    groups = Groups(policy, RewardGroup(reward_pool, "reward", dict(cfg=cfg), env, init_distributed=False))
    shared = pool if device == "cpu" else None
    share_cpus = 0.0 if device == "cpu" else None
    if cfg.algorithm.needs_critic():
        critic_pool = shared or ResourcePool.create(world, cfg.trainer.cpus_per_worker, device)
        groups.critic = CriticGroup(
            critic_pool,
            "critic",
            dict(cfg=cfg, device=device),
            env,
            cpus_per_actor=share_cpus,
            balance_tokens=cfg.actor.balance_tokens,
        )
    if cfg.reward.model_path is not None:
        rm_pool = shared or ResourcePool.create(world, cfg.trainer.cpus_per_worker, device)
        groups.reward_model = RewardModelGroup(
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
