"""The trainer's view of the rollout: `submit` / `generate` / `sync_weights`, colocated or split (issue 11).

Colocated (the hybrid engine): the policy group generates in its own processes and a sync is an in-memory reload.
Split: the rollout group generates, and a sync runs both sides at once, trainer rank 0 broadcasting over the sync
world while every rollout worker receives and reloads (`rlhf.workers.weight_transfer`), the whole sync bounded by
`async_training.sync_timeout_s`.
"""

from __future__ import annotations

import logging
import time

from rlhf.async_config import AsyncTrainingConfig
from rlhf.batch import Batch
from rlhf.cluster import ActorRolloutRefGroup, Groups, RolloutGroup
from rlhf.workers.group import GroupTimeoutError, PendingCall, WorkerDiedError
from rlhf.workers.hybrid import ActorRolloutRefWorker
from rlhf.workers.rollout_worker import RolloutWorker
from rlhf.workers.weight_transfer import WeightSyncError

logger = logging.getLogger(__name__)


class ColocatedRollout:
    """vLLM inside the policy's processes (the default)."""

    def __init__(self, policy: ActorRolloutRefGroup) -> None:
        self.policy = policy

    def submit(self, prompts: Batch, temperature: float | None = None, n: int | None = None) -> PendingCall:
        return self.policy.submit(ActorRolloutRefWorker.generate, prompts, temperature=temperature, n=n)

    def generate(self, prompts: Batch, temperature: float | None = None, n: int | None = None) -> Batch:
        return self.policy.generate(prompts, temperature=temperature, n=n)

    def sync_weights(self) -> dict[str, float]:
        return self.policy.sync_weights()


class SplitRollout:
    """vLLM on its own workers; weights travel from trainer rank 0 over a collective after each update."""

    def __init__(self, policy: ActorRolloutRefGroup, rollout: RolloutGroup, cfg: AsyncTrainingConfig) -> None:
        """Open the sync world (both sides join at once) and push the initial weights, so that the engines hold
        exactly the trainer's weights (a resumed run's included) before the first generation."""
        self.policy, self.rollout, self.cfg = policy, rollout, cfg
        self.bucket_bytes = int(cfg.sync_bucket_mb * 2**20)
        self.peers = (
            f"trainer rank 0 on {policy.nodes[0]} -> rollout worker(s) 0..{rollout.world_size - 1} on "
            f"{', '.join(sorted(set(rollout.nodes)))}"
        )
        host, port = policy.rank0_address()
        world = 1 + rollout.world_size
        args = (host, port, world, cfg.sync_timeout_s, self.peers)
        sender = policy.submit(ActorRolloutRefWorker.open_weight_sender, *args)
        receiver = rollout.submit(RolloutWorker.open_weight_receiver, *args)
        self.specs = self._both(sender, receiver, "joining the sync world", timeout_s=None)
        logger.info("weight sync world open: %s (%d tensors)", self.peers, len(self.specs))
        self.sync_weights()

    def submit(self, prompts: Batch, temperature: float | None = None, n: int | None = None) -> PendingCall:
        return self.rollout.submit(RolloutWorker.generate, prompts, temperature=temperature, n=n)

    def generate(self, prompts: Batch, temperature: float | None = None, n: int | None = None) -> Batch:
        return self.rollout.generate(prompts, temperature=temperature, n=n)

    def sync_weights(self) -> dict[str, float]:
        """Trainer rank 0 -> every rollout engine. Returns perf/update_weights_bytes.

        Raises:
            WeightSyncError: either side failed, died or did not finish within async_training.sync_timeout_s.
        """
        start = time.perf_counter()
        sender = self.policy.submit(ActorRolloutRefWorker.send_weights, self.bucket_bytes)
        receiver = self.rollout.submit(RolloutWorker.receive_weights, self.specs, self.bucket_bytes)
        metrics = self._both(sender, receiver, "syncing weights", timeout_s=self.cfg.sync_timeout_s)
        logger.debug("weight sync: %.2f MB in %.3f s", metrics["perf/update_weights_bytes"] / 2**20,
                     time.perf_counter() - start)  # fmt: skip
        return metrics

    def _both(self, sender: PendingCall, receiver: PendingCall, what: str, timeout_s: float | None) -> object:
        """Wait for both sides (each within what is left of `timeout_s`); the sender's result."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            result = sender.result(timeout_s=None if deadline is None else max(0.0, deadline - time.monotonic()))
            receiver.result(timeout_s=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except (WorkerDiedError, GroupTimeoutError) as e:
            raise WeightSyncError(
                f"weight sync {self.peers} failed while {what} (async_training.sync_timeout_s="
                f"{self.cfg.sync_timeout_s:g}): {e}"
            ) from e
        return result


def make_rollout_client(groups: Groups, cfg: AsyncTrainingConfig) -> ColocatedRollout | SplitRollout:
    """The split rollout when the rollout group exists, else the colocated one."""
    if groups.rollout is None:
        return ColocatedRollout(groups.policy)
    return SplitRollout(groups.policy, groups.rollout, cfg)
