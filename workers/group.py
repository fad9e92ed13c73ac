"""WorkerGroup: N Ray actors of one worker class on a resource pool; calls fan out and gather as the method declares.

A role's group subclasses `WorkerGroup` with its worker class and one typed wrapper per worker method, each a single
line calling the method object: `return self.call(ActorRolloutRefWorker.compute_log_prob, batch)`. The controller
never loops over actors, an IDE follows the call to the worker, and `call` reads the method's `@dispatch` spec
(split or broadcast, then how to collect). Results are gathered with `ray.wait`, so the first rank that dies stops the
call at once with an error that names the role, rank and node, instead of leaving the others hanging in a collective.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import ray
import torch
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from rlhf.workers.base import Collect, Mode, Placement, Worker, dispatch_spec
from rlhf.workers.resource_pool import ResourcePool

from rlhf.batch import Batch
from rlhf.packing import dp_balanced_order

logger = logging.getLogger(__name__)


class WorkerDiedError(RuntimeError):
    """A worker process of a group died or raised; the message names role, rank and node."""


class GroupTimeoutError(RuntimeError):
    """Some ranks of a group did not answer a call within its deadline; the message names the role and ranks."""


class WorkerGroup:
    """`pool.num_ranks` actors of `worker_cls` laid out node-major on `pool`, joined in one torch.distributed world.

    Subclasses set `worker_cls` and add typed wrappers that call `self.call(WorkerCls.method, ...)`.
    """

    worker_cls: ClassVar[type[Worker]]

    def __init__(
        self,
        pool: ResourcePool,
        role: str,
        worker_kwargs: dict[str, Any],
        runtime_env: dict[str, Any],
        init_distributed: bool = True,
        shares_bundles: bool = False,
        balance_tokens: bool = False,
    ) -> None:
        """Start the actors, record where each one runs, and join them in one world (rendezvous on rank 0's node).

        Args:
            runtime_env: Ray's runtime_env for every actor (`env_vars`, and `pip` when the config asks for it).
            shares_bundles: run in bundles another group reserved, taking no resources of its own (e.g. the critic
                on CPU, which runs between the policy's stages).
            balance_tokens: deal the rows of `balance=True` methods to ranks by token count.
        """
        self.role, self.world_size, self.balance_tokens = role, pool.num_ranks, balance_tokens
        remote_cls = ray.remote(self.worker_cls)
        self.actors = [
            remote_cls.options(
                num_cpus=0 if shares_bundles else pool.cpus_per_rank,
                num_gpus=0 if shares_bundles else pool.gpus_per_rank,
                memory=None if shares_bundles or not pool.memory_bytes_per_rank else pool.memory_bytes_per_rank,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    pool.placement_group, placement_group_bundle_index=pool.bundle_of(rank)
                ),
                runtime_env=runtime_env,
                name=None,
            ).remote(role=role, rank=rank, world_size=self.world_size, **worker_kwargs)
            for rank in range(self.world_size)
        ]
        self.placements: list[Placement] = self._gather([a.placement.remote() for a in self.actors])
        self.nodes = [f"{p.hostname} ({p.node_id[:12]})" for p in self.placements]
        self.node_ids = [p.node_id for p in self.placements]
        for rank, p in enumerate(self.placements):
            logger.info("%s rank %d/%d: node %s (%s, %s), GPUs %s", role, rank, self.world_size, p.node_id,
                        p.hostname, p.ip, p.gpu_ids or "none")  # fmt: skip
        if init_distributed:
            # Rank 0's node hosts the rendezvous; every other node connects to its address.
            addr, port = self.rank0_address()
            backend = "nccl" if pool.device == "cuda" else "gloo"
            self._gather([a.init_distributed.remote(addr, port, backend) for a in self.actors])

    def rank0_address(self) -> tuple[str, int]:
        """Rank 0's node address and a port free there (a rendezvous: this group's world, or the weight sync's)."""
        return self._gather([self.actors[0].rendezvous_address.remote()], ranks=[0])[0]

    def check_devices(self, device: str) -> None:
        """Every model of every worker sits on the device type its placement reserved (CUDA: on its own GPU).

        Raises:
            RuntimeError: naming the role, rank, node, model and the two devices.
        """
        reports = self._gather([a.model_devices.remote() for a in self.actors])
        for rank, (devices, placement) in enumerate(zip(reports, self.placements, strict=True)):
            for model, model_device in devices.items():
                wrong = not model_device.startswith(device) or (device == "cuda" and not placement.gpu_ids)
                if wrong:
                    raise RuntimeError(
                        f"{self.role} rank {rank} on node {self.nodes[rank]}: its {model} is on {model_device}, but "
                        f"its placement reserved {device} (GPUs {placement.gpu_ids or 'none'})"
                    )
        logger.info("%s: every model on its reserved device (%s)", self.role, device)

    def check_path_visible(self, path: str, token: str, key: str) -> None:
        """Every worker reads `token` from file `path` (written by the driver): storage shared by every node.

        Raises:
            RuntimeError: naming the nodes that cannot see it and the config key `key` that chose the path.
        """
        seen = self._gather([a.reads_token.remote(path, token) for a in self.actors])
        blind = sorted({self.nodes[rank] for rank, ok in enumerate(seen) if not ok})
        if blind:
            raise RuntimeError(
                f"{key}: nodes {blind} cannot see {path}, which the driver wrote: checkpoints on several nodes need "
                f"{key} on storage every node mounts at the same path (see docs/cluster.md)"
            )

    def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call worker method `method` (e.g. `ActorRolloutRefWorker.generate`) on every rank as its @dispatch says.

        Mode.DP splits `args[0]` (a Batch) into one shard per rank; Mode.ALL passes the same arguments to all. The
        ranks' results are then collected by the spec's `Collect` (concatenated, rank 0's, a list, max, sum).

        Raises:
            TypeError: `method` is not a dispatched method of this group's worker class, or a DP call without a Batch.
            WorkerDiedError: a rank died or raised.
        """
        return self.submit(method, *args, **kwargs).result()

    def submit(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> PendingCall:
        """`call` without waiting: the ranks start now, `.result()` collects (asynchronous rollouts, the weight
        sync's two sides running at once). A Ray actor runs its calls in submission order."""
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
        return PendingCall(self, name, spec.collect, refs, order)

    def _gather(
        self, refs: Sequence[ray.ObjectRef], ranks: Sequence[int] | None = None, timeout_s: float | None = None
    ) -> list[Any]:
        """ray.get in rank order, failing fast on the first rank that dies or raises (or, with `timeout_s`, on the
        deadline: GroupTimeoutError naming the ranks that did not answer)."""
        ranks = list(range(len(refs))) if ranks is None else list(ranks)
        rank_of = {ref: r for ref, r in zip(refs, ranks, strict=True)}
        pending = list(refs)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, pending = ray.wait(pending, num_returns=1, timeout=left)
            if not done:
                late = sorted(rank_of[ref] for ref in pending)
                raise GroupTimeoutError(
                    f"{self.role} worker rank(s) {late} of {self.world_size} did not answer within {timeout_s:g} s"
                )
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


class PendingCall:
    """A group call in flight (`WorkerGroup.submit`): `result()` gathers and collects as the method declares."""

    def __init__(
        self, group: WorkerGroup, name: str, collect: Collect, refs: list[ray.ObjectRef], order: list[int] | None
    ) -> None:
        self.group, self.name, self.collect, self.refs, self.order = group, name, collect, refs, order
        self._result: Any = None
        self._has_result = False

    def is_done(self) -> bool:
        """Whether every rank has finished (without waiting)."""
        done, _ = ray.wait(self.refs, num_returns=len(self.refs), timeout=0)
        return len(done) == len(self.refs)

    def result(self, timeout_s: float | None = None) -> Any:
        """The collected result (kept: a second call returns it again); raises WorkerDiedError (a rank died or
        raised) or GroupTimeoutError (deadline)."""
        if self._has_result:
            return self._result
        result = self.collect.apply(self.group._gather(self.refs, timeout_s=timeout_s))
        order = self.order
        if order is not None and self.collect is Collect.CONCAT and len(result) == len(order):
            inverse = torch.empty(len(order), dtype=torch.long)
            inverse[torch.tensor(order)] = torch.arange(len(order))
            result = result.index(inverse)  # back in the caller's row order
        self._result, self._has_result = result, True
        return result
