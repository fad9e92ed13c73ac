"""Weight sync between processes over a real gloo group: bucket plans, exact bytes, and named errors, never hangs."""

from __future__ import annotations

import io
import multiprocessing as mp
import time

import pytest
import torch
from rlhf.workers.base import free_port
from rlhf.workers.weight_transfer import (
    TensorSpec,
    WeightSyncError,
    open_link,
    plan_buckets,
    receive_weights,
    send_weights,
    tensor_specs,
)

PEERS = "trainer rank 0 -> rollout worker 0"


def weights() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        ("embed.weight", torch.randn(50, 8, generator=g)),
        ("layer.bias", torch.randn(8, generator=g)),
        ("layer.scale", torch.randn((), generator=g)),
        ("layer.half", torch.randn(3, 5, generator=g).to(torch.bfloat16)),
        ("lm_head.weight", torch.randn(50, 8, generator=g)),
    ]


def test_plan_buckets_bounds_bytes_and_keeps_order() -> None:
    specs = [TensorSpec(f"t{i}", (n,), torch.float32) for i, n in enumerate([10, 10, 30, 5, 5, 1])]
    plan = plan_buckets(specs, bucket_bytes=80)
    assert plan == [[0, 1], [2], [3, 4, 5]]  # 40+40 fit; 120 alone; 20+20+4
    assert [i for bucket in plan for i in bucket] == list(range(len(specs)))
    assert plan_buckets(specs, bucket_bytes=1) == [[i] for i in range(len(specs))]


def _receiver(port: int, bucket_bytes: int, timeout_s: float, die_after_handshake: bool, out: mp.Queue) -> None:
    try:
        link = open_link("127.0.0.1", port, 1, 2, torch.device("cpu"), timeout_s, PEERS)
        if die_after_handshake:
            return  # the process exits: the sender's next collective finds no peer
        received = [(n, t.clone()) for n, t in receive_weights(link, tensor_specs(weights()), bucket_bytes)]
        # Bytes, not tensors: a tensor on a queue is shared by file descriptor, which is gone once this process exits.
        buffer = io.BytesIO()
        torch.save(received, buffer)
        out.put(("ok", buffer.getvalue()))
    except Exception as e:
        out.put(("error", f"{type(e).__name__}: {e}"))


def _start_receiver(port: int, bucket_bytes: int, timeout_s: float, die: bool = False) -> tuple[mp.Process, mp.Queue]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_receiver, args=(port, bucket_bytes, timeout_s, die, out))
    proc.start()
    return proc, out


@pytest.mark.parametrize("bucket_bytes", [64, 1 << 20])
def test_receiver_gets_the_exact_tensors(bucket_bytes: int) -> None:
    port = free_port()
    proc, out = _start_receiver(port, bucket_bytes, 60.0)
    link = open_link("127.0.0.1", port, 0, 2, torch.device("cpu"), 60.0, PEERS)
    sent = send_weights(link, weights(), bucket_bytes)
    status, payload = out.get(timeout=60)
    proc.join(timeout=30)
    assert status == "ok", payload
    received = torch.load(io.BytesIO(payload))
    assert sent == sum(t.numel() * t.element_size() for _, t in weights())
    for (name, want), (got_name, got) in zip(weights(), received, strict=True):
        assert name == got_name and got.dtype == want.dtype and torch.equal(got, want), name


def test_a_receiver_that_dies_mid_sync_fails_the_sender_with_a_named_error() -> None:
    port = free_port()
    proc, _ = _start_receiver(port, 64, 10.0, die=True)
    link = open_link("127.0.0.1", port, 0, 2, torch.device("cpu"), 10.0, PEERS)
    proc.join(timeout=30)
    start = time.monotonic()
    with pytest.raises(WeightSyncError, match=f"weight sync {PEERS} failed while sending bucket 0"):
        send_weights(link, weights(), 64)
    assert time.monotonic() - start < 15


def test_a_sender_that_never_sends_times_out_the_receiver() -> None:
    port = free_port()
    proc, out = _start_receiver(port, 64, 3.0)
    link = open_link("127.0.0.1", port, 0, 2, torch.device("cpu"), 3.0, PEERS)
    status, message = out.get(timeout=30)
    proc.join(timeout=30)
    assert status == "error", message
    assert "WeightSyncError" in message and PEERS in message and "receiving (sync rank 1) bucket 0" in message
    del link
