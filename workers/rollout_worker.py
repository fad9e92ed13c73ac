"""The split-placement rollout worker: a Ray actor holding only a vLLM engine (no DeepSpeed, no optimizer).

It generates exactly as the colocated worker does (`VLLMRollout.sample`) and receives new weights from trainer rank 0
over the sync world (`rlhf.workers.weight_transfer`), streaming each bucket into vLLM's `reload_weights`. It also
measures how long it sat idle between calls, which the trainer reports as `timing_s/wait_train`.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from rlhf.workers.base import Collect, Mode, Worker, device_of, dispatch
from rlhf.workers.weight_transfer import SyncLink, TensorSpec, open_link, receive_weights
from transformers import AutoTokenizer

from rlhf.batch import Batch
from rlhf.config import RLHFConfig

logger = logging.getLogger(__name__)

DIE_MID_SYNC_ENV = "RLHF_TESTING_ROLLOUT_DIES_AT_SYNC"
"""Fault injection for tests, as Ray's RAY_testing_* variables: "N:PATH" makes rollout worker 0 SIGKILL itself after
the first tensor of its N-th weight sync (the first is the one at start-up), once: it creates PATH before dying and
never dies while PATH exists, so the run restarted after the death goes on."""

IDLE_KEY = "rollout_idle_s"
"""Batch.meta key of a generated batch: seconds this worker waited for work since its previous call ended."""


class RolloutWorker(Worker):
    """One rollout engine of the split placement (one device, tensor-parallel 1)."""

    def __init__(self, role: str, rank: int, world_size: int, cfg: RLHFConfig, device: str) -> None:
        super().__init__(role, rank, world_size)
        self.cfg, self.device = cfg, device_of(device)
        self.weight_link: SyncLink | None = None
        self.num_syncs = 0
        self.idle_since = time.perf_counter()

    @dispatch(Mode.ALL, Collect.NONE)
    def init_model(self) -> None:
        """Start vLLM (imported here so the driver, which imports this class for Ray, never pays for it)."""
        from rlhf.workers.rollout import VLLMRollout  # noqa: PLC0415

        tokenizer = AutoTokenizer.from_pretrained(self.cfg.model.path)
        self.rollout = VLLMRollout(self.cfg, self.device, tokenizer.pad_token_id)
        self.idle_since = time.perf_counter()

    @dispatch(Mode.DP, Collect.CONCAT)
    def generate(self, batch: Batch, temperature: float | None = None, n: int | None = None) -> Batch:
        """n responses per prompt, as the colocated worker's `generate`; meta[IDLE_KEY]: this worker's idle time."""
        idle_s = time.perf_counter() - self.idle_since
        try:
            out = self.rollout.sample(batch, temperature=temperature, n=n)
        finally:
            self.idle_since = time.perf_counter()
        out.meta[IDLE_KEY] = idle_s
        return out

    @dispatch(Mode.ALL, Collect.NONE)
    def open_weight_receiver(self, host: str, port: int, sync_world_size: int, timeout_s: float, peers: str) -> None:
        """Join the sync world as rank 1 + this worker's rank (trainer rank 0 joins at the same time as rank 0)."""
        self.weight_link = open_link(host, port, 1 + self.rank, sync_world_size, self.device, timeout_s, peers)

    @dispatch(Mode.ALL, Collect.FIRST)
    def receive_weights(self, specs: Sequence[TensorSpec], bucket_bytes: int) -> int:
        """Load the weights trainer rank 0 broadcasts, bucket by bucket. Returns how many tensors were loaded."""
        assert self.weight_link is not None, "open_weight_receiver must run before receive_weights"
        self.num_syncs += 1
        try:
            return self.rollout.sync_weights(self._maybe_die(receive_weights(self.weight_link, specs, bucket_bytes)))
        finally:
            self.idle_since = time.perf_counter()

    def _maybe_die(self, tensors: Iterator[tuple]) -> Iterator[tuple]:
        """`tensors`, unless DIE_MID_SYNC_ENV asks this worker to die in this sync (after its first tensor)."""
        when, _, marker = os.environ.get(DIE_MID_SYNC_ENV, "").partition(":")
        dies = self.rank == 0 and when.isdigit() and int(when) == self.num_syncs and not Path(marker).exists()
        for index, item in enumerate(tensors):
            yield item
            if dies and index == 0:
                Path(marker).touch()
                logger.warning("%s: rollout worker 0 kills itself in weight sync %d", DIE_MID_SYNC_ENV, self.num_syncs)
                os.kill(os.getpid(), signal.SIGKILL)
