"""WorkerGroup: N Ray actors of one worker class on a resource pool; calls fan out and gather as the method declares.

A role's group subclasses `WorkerGroup` with its worker class and one typed wrapper per worker method, each a single
line calling the method object: `return self.call(ActorRolloutRefWorker.compute_log_prob, batch)`. The controller
never loops over actors, an IDE follows the call to the worker, and `call` reads the method's `@dispatch` spec
(split or broadcast, then how to collect). Results are gathered with `ray.wait`, so the first rank that dies stops the
call at once with an error that names the role, rank and node, instead of leaving the others hanging in a collective.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import ray
import torch
from ray.exceptions import RayActorError, RayTaskError
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from rlhf.workers.base import Collect, Mode, Worker, dispatch_spec

from rlhf.batch import Batch
from rlhf.packing import dp_balanced_order

logger = logging.getLogger(__name__)


class WorkerDiedError(RuntimeError):
    """A worker process of a group died or raised; the message names role, rank and node."""


@dataclass(frozen=True)
class ResourcePool:
    """A placement group with one bundle per rank; `device` is "cpu" or "cuda"."""

    placement_group: PlacementGroup
    num_ranks: int
    cpus_per_rank: float
    device: str

    @staticmethod
    def create(num_ranks: int, cpus_per_rank: float, device: str, strategy: str = "PACK") -> ResourcePool:
        bundle: dict[str, float] = {"CPU": cpus_per_rank}
        if device == "cuda":
            bundle["GPU"] = 1
        pg = ray.util.placement_group([dict(bundle) for _ in range(num_ranks)], strategy=strategy)
        ready, _ = ray.wait([pg.ready()], timeout=120)
        if not ready:
            raise RuntimeError(
                f"Ray could not reserve {num_ranks} x {bundle} within 120 s; cluster resources: "
                f"{ray.available_resources()} (check trainer.num_devices_per_node and trainer.cpus_per_worker)"
            )
        return ResourcePool(pg, num_ranks, cpus_per_rank, device)


class WorkerGroup:
    """`pool.num_ranks` actors of `worker_cls`, rank i in bundle i, joined in one torch.distributed world.

    Subclasses set `worker_cls` and add typed wrappers that call `self.call(WorkerCls.method, ...)`.
    """

    worker_cls: ClassVar[type[Worker]]

    def __init__(
        self,
        pool: ResourcePool,
        role: str,
        worker_kwargs: dict[str, Any],
        env_vars: dict[str, str],
        init_distributed: bool = True,
        cpus_per_actor: float | None = None,
        balance_tokens: bool = False,
    ) -> None:
        """`cpus_per_actor` < the bundle's CPUs lets a second group share the pool (e.g. the critic on CPU);
        `balance_tokens` deals the rows of `balance=True` methods to ranks by token count."""
        self.role, self.world_size, self.balance_tokens = role, pool.num_ranks, balance_tokens
        remote_cls = ray.remote(self.worker_cls)
        self.actors = [
            remote_cls.options(
                num_cpus=pool.cpus_per_rank if cpus_per_actor is None else cpus_per_actor,
                num_gpus=1 if pool.device == "cuda" else 0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    pool.placement_group, placement_group_bundle_index=rank
                ),
                runtime_env={"env_vars": env_vars},
                name=None,
            ).remote(role=role, rank=rank, world_size=self.world_size, **worker_kwargs)
            for rank in range(self.world_size)
        ]
        self.nodes = self._gather([a.node_name.remote() for a in self.actors])
        if init_distributed:
            addr, port = self._gather([self.actors[0].rendezvous_address.remote()], ranks=[0])[0]
            backend = "nccl" if pool.device == "cuda" else "gloo"
            self._gather([a.init_distributed.remote(addr, port, backend) for a in self.actors])

    def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call worker method `method` (e.g. `ActorRolloutRefWorker.generate`) on every rank as its @dispatch says.

        Mode.DP splits `args[0]` (a Batch) into one shard per rank; Mode.ALL passes the same arguments to all. The
        ranks' results are then collected by the spec's `Collect` (concatenated, rank 0's, a list, max, sum).

        Raises:
            TypeError: `method` is not a dispatched method of this group's worker class, or a DP call without a Batch.
            WorkerDiedError: a rank died or raised.
        """
        spec = dispatch_spec(method)
        name = method.__name__
        if getattr(self.worker_cls, name, None) is not method:
            raise TypeError(f"{method.__qualname__} is not a method of {self.worker_cls.__name__} ({self.role} group)")
        order = None
        if spec.mode is Mode.DP:
            if not args or not isinstance(args[0], Batch):
                raise TypeError(f"{self.role}.{name} is dispatched DP: its first argument must be a Batch")
            batch = args[0]
            if spec.balance and self.balance_tokens and self.world_size > 1 and len(batch) % self.world_size == 0:
                order = dp_balanced_order(batch["attention_mask"].sum(-1).tolist(), self.world_size)
                batch = batch.index(order)
            shards = batch.split(self.world_size)
            refs = [getattr(a, name).remote(s, *args[1:], **kwargs) for a, s in zip(self.actors, shards, strict=True)]
        else:
            refs = [getattr(a, name).remote(*args, **kwargs) for a in self.actors]
        result = spec.collect.apply(self._gather(refs))
        if order is not None and spec.collect is Collect.CONCAT and len(result) == len(order):
            inverse = torch.empty(len(order), dtype=torch.long)
            inverse[torch.tensor(order)] = torch.arange(len(order))
            result = result.index(inverse)  # back in the caller's row order
        return result

    def _gather(self, refs: Sequence[ray.ObjectRef], ranks: Sequence[int] | None = None) -> list[Any]:
        """ray.get in rank order, failing fast on the first rank that dies or raises."""
        ranks = list(range(len(refs))) if ranks is None else list(ranks)
        rank_of = {ref: r for ref, r in zip(refs, ranks, strict=True)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ref = done[0]
            try:
                ray.get(ref)
            except (RayActorError, RayTaskError) as exc:
                rank = rank_of[ref]
                node = self.nodes[rank] if hasattr(self, "nodes") else "unknown node"
                cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc
                detail = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
                raise WorkerDiedError(
                    f"{self.role} worker rank {rank}/{self.world_size} on node {node} failed: "
                    f"{type(cause).__name__}: {detail[:500]}"
                ) from exc
        return ray.get(list(refs))

    def kill(self) -> None:
        """Stop every actor of the group now (no graceful shutdown)."""
        for a in self.actors:
            ray.kill(a, no_restart=True)
