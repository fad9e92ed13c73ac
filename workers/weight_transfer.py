"""Weight sync between processes (split placement): trainer rank 0 broadcasts the policy to the rollout engines.

The sync world is its own process group, outside the trainer's torch.distributed world: rank 0 is trainer rank 0,
ranks 1..N the rollout workers, rendezvous through a TCPStore on trainer rank 0's node (gloo on CPU, NCCL on CUDA).
Both sides derive the same bucket plan from the tensor specs, so only the bytes travel: each bucket is one flat
uint8 buffer of at most `bucket_bytes` (a larger tensor gets a bucket of its own), and the receiver hands tensors to
vLLM bucket by bucket, so neither side holds a second full copy. Every collective waits at most `timeout_s` and
then raises `WeightSyncError` naming both sides, never hangs.
"""

from __future__ import annotations

import datetime
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


class WeightSyncError(RuntimeError):
    """A weight sync between the trainer and the rollout engines failed or timed out; names both sides."""


@dataclass(frozen=True)
class TensorSpec:
    """What the receiver needs to rebuild one tensor from the bytes of a bucket."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def num_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def tensor_specs(named_tensors: Sequence[tuple[str, torch.Tensor]]) -> list[TensorSpec]:
    return [TensorSpec(name, tuple(t.shape), t.dtype) for name, t in named_tensors]


def plan_buckets(specs: Sequence[TensorSpec], bucket_bytes: int) -> list[list[int]]:
    """Consecutive tensor indices grouped into buckets of at most `bucket_bytes` (one larger tensor: alone)."""
    buckets: list[list[int]] = []
    size = 0
    for i, spec in enumerate(specs):
        if buckets and size + spec.num_bytes <= bucket_bytes:
            buckets[-1].append(i)
            size += spec.num_bytes
        else:
            buckets.append([i])
            size = spec.num_bytes
    return buckets


@dataclass
class SyncLink:
    """One side of the sync world: the process group, this side's rank and who is at the other end (for errors)."""

    group: dist.ProcessGroup
    rank: int
    world_size: int
    device: torch.device
    timeout_s: float
    peers: str
    """E.g. "trainer rank 0 (node 10.0.0.1) -> rollout workers 0..1": named in every error."""

    def broadcast(self, buffer: torch.Tensor, what: str) -> None:
        """Broadcast `buffer` from sync rank 0, waiting at most timeout_s."""
        options = dist.BroadcastOptions()
        options.rootRank = 0
        options.rootTensor = 0
        options.timeout = datetime.timedelta(seconds=self.timeout_s)
        side = "sending" if self.rank == 0 else f"receiving (sync rank {self.rank})"
        try:
            work = self.group.broadcast([buffer], options)
            if not work.wait(datetime.timedelta(seconds=self.timeout_s)):
                raise TimeoutError(f"no completion within {self.timeout_s:g} s")
        except Exception as e:  # gloo/NCCL raise RuntimeError or DistBackendError on a dead peer or a timeout
            raise WeightSyncError(
                f"weight sync {self.peers} failed while {side} {what} (async_training.sync_timeout_s="
                f"{self.timeout_s:g}): {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            ) from e


def open_link(
    host: str,
    port: int,
    rank: int,
    world_size: int,
    device: torch.device,
    timeout_s: float,
    peers: str,
    join_timeout_s: float = 300.0,
) -> SyncLink:
    """Join the sync world (every member calls this at the same time; rank 0 hosts the store on `host:port`).

    `join_timeout_s` bounds the rendezvous (the other side may still be starting); `timeout_s` every collective.
    """
    timeout = datetime.timedelta(seconds=timeout_s)
    join_timeout = datetime.timedelta(seconds=join_timeout_s)
    try:
        store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=join_timeout, wait_for_workers=False)
        prefixed = dist.PrefixStore("rlhf_weight_sync", store)
        if device.type == "cuda":
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout  # NCCL connects lazily, at the handshake below; its watchdog uses this
            group: dist.ProcessGroup = dist.ProcessGroupNCCL(prefixed, rank, world_size, options)
        else:
            group = dist.ProcessGroupGloo(prefixed, rank, world_size, join_timeout)
    except Exception as e:
        raise WeightSyncError(
            f"weight sync {peers}: sync rank {rank}/{world_size} could not join at {host}:{port} within "
            f"{join_timeout_s:g} s: {type(e).__name__}: {e}"
        ) from e
    store.set_timeout(timeout)
    handshake = SyncLink(group, rank, world_size, device, join_timeout_s, peers)
    handshake.broadcast(torch.zeros(1, device=device), "the handshake")  # everyone is there before the first sync
    return SyncLink(group, rank, world_size, device, timeout_s, peers)


ALIGN = 16  # bytes: every tensor starts at a multiple, so the receiver can view any dtype without copying


def bucket_offsets(specs: Sequence[TensorSpec], bucket: Sequence[int]) -> tuple[list[int], int]:
    """Byte offset of each tensor of `bucket` in its flat buffer (aligned to ALIGN), and the buffer's size."""
    offsets, end = [], 0
    for i in bucket:
        start = -(-end // ALIGN) * ALIGN
        offsets.append(start)
        end = start + specs[i].num_bytes
    return offsets, end


def send_weights(link: SyncLink, named_tensors: Sequence[tuple[str, torch.Tensor]], bucket_bytes: int) -> int:
    """Sync rank 0: broadcast `named_tensors` (in the order the receivers' specs list them). Returns bytes sent."""
    specs = tensor_specs(named_tensors)
    sent = 0
    for number, bucket in enumerate(plan_buckets(specs, bucket_bytes)):
        offsets, size = bucket_offsets(specs, bucket)
        flat = torch.zeros(size, dtype=torch.uint8, device=link.device)
        for i, offset in zip(bucket, offsets, strict=True):
            flat[offset : offset + specs[i].num_bytes] = _as_bytes(named_tensors[i][1].to(link.device))
        link.broadcast(flat, f"bucket {number} ({specs[bucket[0]].name}, ...)")
        sent += sum(specs[i].num_bytes for i in bucket)
    return sent


def receive_weights(
    link: SyncLink, specs: Sequence[TensorSpec], bucket_bytes: int
) -> Iterator[tuple[str, torch.Tensor]]:
    """Sync ranks >= 1: the broadcast tensors, bucket by bucket (a generator: pass it straight to the loader)."""
    for number, bucket in enumerate(plan_buckets(specs, bucket_bytes)):
        offsets, size = bucket_offsets(specs, bucket)
        flat = torch.empty(size, dtype=torch.uint8, device=link.device)
        link.broadcast(flat, f"bucket {number} ({specs[bucket[0]].name}, ...)")
        for i, offset in zip(bucket, offsets, strict=True):
            spec = specs[i]
            yield spec.name, flat[offset : offset + spec.num_bytes].view(spec.dtype).view(spec.shape)


def _as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor's bytes as a flat uint8 tensor (no copy when it is already contiguous)."""
    return tensor.detach().contiguous().view(-1).view(torch.uint8)
