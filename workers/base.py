"""Worker base class and the dispatch decorator.

A worker is one rank of a WorkerGroup (one Ray actor). It knows its rank and world size and joins a
torch.distributed group (gloo on CPU, NCCL on CUDA). Each public method declares, with `@dispatch(Mode.X)`, how the
group calls it; the spec is recorded on the function as a frozen dataclass that `WorkerGroup` reads.
"""

from __future__ import annotations

import datetime
import enum
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import ray
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_SPEC_ATTR = "_rlhf_dispatch_spec"


class Mode(enum.Enum):
    """How a WorkerGroup fans a call out and gathers the results."""

    DP = "dp"  # split the Batch (first argument) over ranks; concatenate Batch results in rank order
    ALL = "all"  # same arguments to every rank; a list of every rank's result
    RANK0 = "rank0"  # same arguments to every rank (collectives need all); rank 0's result only


@dataclass(frozen=True)
class DispatchSpec:
    mode: Mode


def dispatch(mode: Mode) -> Callable[[F], F]:
    """Record how a worker method is called by its group: `@dispatch(Mode.DP)`."""

    def wrap(fn: F) -> F:
        setattr(fn, _SPEC_ATTR, DispatchSpec(mode))
        return fn

    return wrap


def dispatch_spec(fn: Callable[..., Any]) -> DispatchSpec:
    """The spec `@dispatch` recorded on `fn`; a clear error if the method was not decorated."""
    spec = getattr(fn, _SPEC_ATTR, None)
    if spec is None:
        raise TypeError(f"{fn.__qualname__} is not a dispatched worker method; decorate it with @dispatch(Mode.X)")
    return spec


def free_port() -> int:
    """A TCP port that is free on this node right now (for the torch.distributed rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class Worker:
    """One rank of a worker group. Subclasses add dispatched methods."""

    def __init__(self, role: str, rank: int, world_size: int) -> None:
        self.role, self.rank, self.world_size = role, rank, world_size
        logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {role}[{rank}] %(name)s: %(message)s")

    def rendezvous_address(self) -> tuple[str, int]:
        """Address and a free port on this node; the group asks rank 0 for it."""
        return ray.util.get_node_ip_address(), free_port()

    def node_name(self) -> str:
        return socket.gethostname()

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
        if dist.is_initialized():
            dist.destroy_process_group()
