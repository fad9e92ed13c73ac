"""Worker base class and the dispatch decorator.

A worker is one rank of a WorkerGroup (one Ray actor). It knows its rank and world size and joins a
torch.distributed group (gloo on CPU, NCCL on CUDA). Each public method declares, once, how its group calls it:
`@dispatch(Mode.DP, Collect.CONCAT)` (split a Batch over ranks, concatenate the results) and so on; the spec is
recorded on the function and `WorkerGroup.call(Worker.method, ...)` reads it.
"""

from __future__ import annotations

import datetime
import enum
import logging
import os
import resource
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
import ray
import torch
import torch.distributed as dist

from rlhf.batch import Batch
from rlhf.logs import LOG_LEVEL_ENV, configure_logging

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_SPEC_ATTR = "_rlhf_dispatch_spec"


class Mode(enum.Enum):
    """How a WorkerGroup fans a call out to its ranks."""

    DP = "dp"  # split the Batch (first argument) over ranks, one shard each
    ALL = "all"  # the same arguments to every rank (collectives need every rank to take part)


class Collect(enum.Enum):
    """How a WorkerGroup gathers the ranks' results (in rank order) into the call's return value."""

    CONCAT = "concat"  # Batch.concat of every rank's Batch
    FIRST = "first"  # rank 0's result (e.g. metrics already reduced over ranks, or a file written by rank 0)
    LIST = "list"  # every rank's result, as a list
    MAX = "max"  # the largest result (e.g. seconds taken: the slowest rank)
    SUM = "sum"  # the sum of numbers, or of tuples of numbers element by element
    NONE = "none"  # nothing (the method returns None)

    def apply(self, results: list[Any]) -> Any:
        if self is Collect.CONCAT:
            return Batch.concat(results)
        if self is Collect.FIRST:
            return results[0]
        if self is Collect.LIST:
            return results
        if self is Collect.MAX:
            return max(results)
        if self is Collect.SUM:
            if isinstance(results[0], tuple):
                return tuple(sum(column) for column in zip(*results, strict=True))
            return sum(results)
        return None


@dataclass(frozen=True)
class DispatchSpec:
    mode: Mode
    collect: Collect
    balance: bool = False
    """DP only: rows may be reordered so every rank gets nearly the same token count (results come back in order)."""


def dispatch(mode: Mode, collect: Collect, *, balance: bool = False) -> Callable[[F], F]:
    """Declare how a worker group calls a worker method: `@dispatch(Mode.DP, Collect.CONCAT)`.

    `balance=True` (DP methods whose Batch has an attention_mask) lets the group deal rows to ranks by token count
    (when the group was built with `balance_tokens`), putting concatenated results back in the caller's order.
    """

    def wrap(fn: F) -> F:
        setattr(fn, _SPEC_ATTR, DispatchSpec(mode, collect, balance))
        return fn

    return wrap


def dispatch_spec(fn: Callable[..., Any]) -> DispatchSpec:
    """The spec `@dispatch` recorded on `fn`; a clear error if the method was not decorated."""
    spec = getattr(fn, _SPEC_ATTR, None)
    if spec is None:
        raise TypeError(
            f"{fn.__qualname__} is not a dispatched worker method; decorate it with @dispatch(Mode.X, Collect.Y)"
        )
    return spec


def device_of(device: str) -> torch.device:
    """The torch device of a worker on `trainer.device` "cuda" (Ray gives each actor its own GPU as cuda:0) or "cpu"."""
    return torch.device("cuda", 0) if device == "cuda" else torch.device("cpu")


def use_deterministic_algorithms() -> None:
    """Deterministic kernels (trainer.deterministic), without torch's debugging fill of every new tensor.

    `torch.use_deterministic_algorithms(True)` also sets `fill_uninitialized_memory`, which writes NaN into every
    `torch.empty` result: gradient buffers and DeepSpeed's flat partitions on every micro-batch made the tiny
    recipe's update 15x slower (1.15 s against 0.07 s). Our code and DeepSpeed's never read memory before writing
    it, so the fill changes no result (the exact-resume test compares runs to 1e-5).
    """
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False


def memory_metrics(device: torch.device) -> dict[str, float]:
    """verl's perf/max_memory_allocated_gb, perf/max_memory_reserved_gb and perf/cpu_memory_used_gb for this rank.

    On CUDA the first two come from the caching allocator; on CPU, which has no allocator statistics, both are this
    process's peak resident set size. cpu_memory_used_gb is the node's used RAM (psutil), as verl reports it.
    """
    gib = 1024**3
    if device.type == "cuda":
        allocated, reserved = torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)
    else:
        allocated = reserved = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {
        "perf/max_memory_allocated_gb": allocated / gib,
        "perf/max_memory_reserved_gb": reserved / gib,
        "perf/cpu_memory_used_gb": psutil.virtual_memory().used / gib,
    }


def leave_distributed() -> None:
    """Leave the torch.distributed world, through DeepSpeed when it joined it: DeepSpeed caches groups of the world,
    which would outlive it and break the next engine built in this process ("Group ... is not registered")."""
    if dist.is_initialized():
        ds_comm = sys.modules.get("deepspeed.comm")
        if ds_comm is not None and ds_comm.is_initialized():
            ds_comm.destroy_process_group()
        else:
            dist.destroy_process_group()


def free_port() -> int:
    """A TCP port that is free on this node right now (for the torch.distributed rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Placement:
    """Where one worker runs: its Ray node, host, address and the GPUs Ray gave it."""

    node_id: str
    hostname: str
    ip: str
    gpu_ids: list[str]


class Worker:
    """One rank of a worker group. Subclasses add dispatched methods."""

    def __init__(self, role: str, rank: int, world_size: int) -> None:
        self.role, self.rank, self.world_size = role, rank, world_size
        configure_logging(
            os.environ.get(LOG_LEVEL_ENV, "INFO"), fmt=f"%(asctime)s {role}[{rank}] %(name)s: %(message)s"
        )

    def rendezvous_address(self) -> tuple[str, int]:
        """Address and a free port on this node; the group asks rank 0 for it."""
        return ray.util.get_node_ip_address(), free_port()

    def placement(self) -> Placement:
        return Placement(
            node_id=ray.get_runtime_context().get_node_id(),
            hostname=socket.gethostname(),
            ip=ray.util.get_node_ip_address(),
            gpu_ids=[str(g) for g in ray.get_runtime_context().get_accelerator_ids().get("GPU", [])],
        )

    def model_devices(self) -> dict[str, str]:
        """The device of each model this worker holds, by name (subclasses with models override it)."""
        return {}

    def reads_token(self, path: str, token: str) -> bool:
        """Whether file `path` exists on this node and holds `token` (shared-storage check)."""
        try:
            return Path(path).read_text() == token
        except OSError:
            return False

    def init_distributed(self, master_addr: str, master_port: int, backend: str) -> None:
        """Join the group's torch.distributed world (environment variables also serve DeepSpeed)."""
        os.environ.update(
            MASTER_ADDR=master_addr,
            MASTER_PORT=str(master_port),
            RANK=str(self.rank),
            LOCAL_RANK="0",
            WORLD_SIZE=str(self.world_size),
            LOCAL_WORLD_SIZE="1",
        )
        if backend == "nccl":
            torch.cuda.set_device(0)  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
        dist.init_process_group(
            backend=backend, rank=self.rank, world_size=self.world_size, timeout=datetime.timedelta(minutes=30)
        )
        logger.info("joined %s world of %d ranks at %s:%d", backend, self.world_size, master_addr, master_port)

    def shutdown(self) -> None:
        """Leave the torch.distributed world."""
        leave_distributed()
