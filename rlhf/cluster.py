"""The typed worker groups the RL trainer talks to, and `create_groups` (Ray start-up is in rlhf.ray_setup).

Each group class wraps its worker's dispatched methods one line each (`self.call(Worker.method, ...)`), so the
trainer reads like single-process code and an IDE or a type checker follows every call to the worker;
tests/workers/test_dispatch.py fails when a wrapper and its worker method disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rlhf.batch import Batch
from rlhf.config import RLHFConfig
from rlhf.ray_setup import check_shared_storage, rank_pool, resolve_device, runtime_env, worker_env
from rlhf.workers.critic import CriticWorker
from rlhf.workers.group import WorkerGroup
from rlhf.workers.hybrid import ActorRolloutRefWorker
from rlhf.workers.resource_pool import ResourcePool
from rlhf.workers.reward import RewardWorker
from rlhf.workers.reward_model import RewardModelWorker
from rlhf.workers.rollout_worker import RolloutWorker
from rlhf.workers.weight_transfer import TensorSpec

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

    def open_weight_sender(self, host: str, port: int, sync_world_size: int, timeout_s: float, peers: str) -> list:
        return self.call(ActorRolloutRefWorker.open_weight_sender, host, port, sync_world_size, timeout_s, peers)

    def send_weights(self, bucket_bytes: int) -> dict[str, float]:
        return self.call(ActorRolloutRefWorker.send_weights, bucket_bytes)

    def save_hf_model(self, path: str) -> None:
        self.call(ActorRolloutRefWorker.save_hf_model, path)

    def save_checkpoint(self, directory: str) -> None:
        self.call(ActorRolloutRefWorker.save_checkpoint, directory)

    def load_checkpoint(self, directory: str) -> None:
        self.call(ActorRolloutRefWorker.load_checkpoint, directory)


class RolloutGroup(WorkerGroup):
    """Split placement: the vLLM-only rollout workers (`async_training.num_rollout_workers` of them)."""

    worker_cls = RolloutWorker

    def init_model(self) -> None:
        self.call(RolloutWorker.init_model)

    def generate(self, batch: Batch, temperature: float | None = None, n: int | None = None) -> Batch:
        return self.call(RolloutWorker.generate, batch, temperature=temperature, n=n)

    def open_weight_receiver(self, host: str, port: int, sync_world_size: int, timeout_s: float, peers: str) -> None:
        self.call(RolloutWorker.open_weight_receiver, host, port, sync_world_size, timeout_s, peers)

    def receive_weights(self, specs: Sequence[TensorSpec], bucket_bytes: int) -> int:
        return self.call(RolloutWorker.receive_weights, specs, bucket_bytes)


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
    rollout: RolloutGroup | None = None
    """Split placement only: the vLLM engines (colocated: the policy group generates)."""


def create_groups(cfg: RLHFConfig, run_dir: Path) -> Groups:
    """Reserve the resource pools and start every group the config needs, models built and checked.

    On CPU the critic and reward model share the policy's bundles (they run between the policy's stages); on CUDA
    each gets its own pool, laid out over the nodes like the policy. The groups' actors start at the same time (a
    start is mostly worker processes importing torch and their libraries, seconds per group), except the critic,
    which joins its own torch.distributed world after the policy has joined its. After the models are built, every
    worker's model devices are compared with its placement, and every node must see `run_dir` (shared storage).
    """
    device = resolve_device(cfg.trainer.device)
    env = runtime_env(cfg.trainer, worker_env(cfg.trainer, device, vllm=True))
    pool = rank_pool(cfg.trainer, device, "actor_rollout_ref")
    split = cfg.async_training.is_split
    shared = device == "cpu"
    rw = cfg.reward
    reward_pool = ResourcePool.create(
        rw.num_workers,
        rw.resources.num_cpus,
        "cpu",
        memory_gb_per_rank=rw.resources.memory_gb,
        role="reward",
        timeout_s=cfg.trainer.placement_timeout_s,
        hint="set by reward.num_workers and reward.resources.*",
    )
    starts: dict[str, Callable[[], WorkerGroup]] = {
        "policy": lambda: ActorRolloutRefGroup(
            pool,
            "actor_rollout_ref",
            dict(cfg=cfg, device=device, need_ref=cfg.algorithm.needs_ref(), colocate_rollout=not split),
            env,
            balance_tokens=cfg.actor.balance_tokens,
        ),
        "reward": lambda: RewardGroup(reward_pool, "reward", dict(cfg=cfg), env, init_distributed=False),
    }
    if rw.model_path is not None:
        rm_pool = (
            pool if shared else rank_pool(cfg.trainer, device, "reward_model", rw.rm_resources, "reward.rm_resources")
        )
        starts["reward_model"] = lambda: RewardModelGroup(
            rm_pool,
            "reward_model",
            dict(cfg=cfg, policy_tokenizer_path=cfg.model.path, device=device),
            env,
            init_distributed=False,
            shares_bundles=shared,
        )
    if split:
        starts["rollout"] = lambda: create_rollout_group(cfg, device, env)
    groups = Groups(**start_together(starts))
    if cfg.algorithm.needs_critic():
        critic_pool = (
            pool if shared else rank_pool(cfg.trainer, device, "critic", cfg.critic.resources, "critic.resources")
        )
        groups.critic = CriticGroup(
            critic_pool,
            "critic",
            dict(cfg=cfg, device=device),
            env,
            shares_bundles=shared,
            balance_tokens=cfg.actor.balance_tokens,
        )
    groups.policy.init_model()
    if groups.rollout is not None:
        groups.rollout.init_model()
    if groups.critic is not None:
        groups.critic.init_model()
    for group in (groups.policy, groups.critic, groups.reward_model):
        if group is not None:
            group.check_devices(device)
    check_shared_storage(groups.policy, run_dir)
    if groups.critic is not None and not shared:
        check_shared_storage(groups.critic, run_dir)
    return groups


def start_together(starts: dict[str, Callable[[], WorkerGroup]]) -> dict[str, WorkerGroup]:
    """Run every group start (name -> constructor) in its own thread and wait for all of them; the first failure,
    in `starts` order, is raised once every start has ended."""
    with ThreadPoolExecutor(max_workers=len(starts), thread_name_prefix="start-group") as executor:
        futures = {name: executor.submit(start) for name, start in starts.items()}
    return {name: future.result() for name, future in futures.items()}


def create_rollout_group(cfg: RLHFConfig, device: str, env: dict) -> RolloutGroup:
    """Split placement: `async_training.num_rollout_workers` vLLM workers on their own pool (one device each on
    CUDA, trainer.cpus_per_worker CPUs each), outside the trainer's torch.distributed world."""
    pool = ResourcePool.create(
        cfg.async_training.num_rollout_workers,
        cfg.trainer.cpus_per_worker,
        device,
        memory_gb_per_rank=cfg.trainer.memory_gb_per_worker,
        role="rollout",
        timeout_s=cfg.trainer.placement_timeout_s,
        hint="set by async_training.num_rollout_workers, trainer.cpus_per_worker and trainer.memory_gb_per_worker",
    )
    return RolloutGroup(pool, "rollout", dict(cfg=cfg, device=device), env, init_distributed=False)
