"""ScoringPool: worker processes that score chunks of RewardItems, with a deadline per item.

Items go to a worker in chunks and results come back in batches, so the pipe carries a few messages per chunk,
not one per item. Which item a worker is on, and since when, sits in a two-slot shared-memory array the worker
writes before each item: the pool reads it to hold exactly that item to its deadline, kills the worker when the
deadline passes, and resubmits the chunk's other unfinished items to a fresh worker.
"""

import math
import multiprocessing
import signal
import time
import traceback
import weakref
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from rlhf.rewards.registry import load_reward_fn
from rlhf.rewards.scoring import Outcome, RewardItem, score_one

# forkserver: workers fork from a small clean server process, not from the caller, which often is a threaded Ray
# actor (forking a threaded process can deadlock); replacing a killed worker is then a cheap fork.
_START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
# Imported once in the forkserver, so that each worker forks with the built-in reward functions loaded (math-verify
# and sympy take seconds to import) and a replacement starts in milliseconds; "__main__" is multiprocessing's default.
_FORKSERVER_PRELOAD = ["__main__", __name__]
# Chunks per worker per call: several, so a worker that drew slow items does not leave the others idle.
_CHUNKS_PER_WORKER = 4
# Upper bound on a chunk: past this, fewer messages buy no more throughput.
_MAX_CHUNK_SIZE = 256
# Within a long chunk a worker sends what it has finished at least this often (bounds rework after a kill).
_RESULT_FLUSH_S = 0.05
# A worker that has not loaded the reward function after this long is broken (start-up takes well under 10 s).
_STARTUP_TIMEOUT_S = 120.0
# Slots of a worker's shared progress array.
_POSITION, _STARTED_AT = 0, 1


def _worker_main(conn: Connection, spec: str | None, progress: Any) -> None:
    """Worker process: load the function by spec (None: built-ins per data source), then score chunks until told
    to stop (None) or orphaned. progress = [position in chunk of the current item, its start time.monotonic()]."""
    # Ctrl-C reaches the whole process group; the caller decides when workers stop (and kills them if need be).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        fn = load_reward_fn(spec) if spec is not None else None
    except BaseException:
        conn.send(("ready", traceback.format_exc()))
        return
    conn.send(("ready", None))
    while True:
        try:
            chunk = conn.recv()
        except EOFError:  # the pool is gone
            return
        if chunk is None:
            return
        results, last_flush = [], time.monotonic()
        for position, (index, item) in enumerate(chunk):
            # Start time first: a reader that sees the new position also sees its start time. time.monotonic() is
            # one system-wide clock (CLOCK_MONOTONIC), so the caller compares it with its own.
            progress[_STARTED_AT] = time.monotonic()
            progress[_POSITION] = position
            results.append((index, *score_one(fn, item)))
            if time.monotonic() - last_flush >= _RESULT_FLUSH_S:
                conn.send(("results", results))
                results, last_flush = [], time.monotonic()
        if results:
            conn.send(("results", results))


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    progress: Any  # shared ctypes double[2]: [_POSITION, _STARTED_AT]
    spawned_at: float
    is_ready: bool = False
    chunk: list[int] = field(default_factory=list)  # item indices of the chunk in progress
    num_reported: int = 0  # results received for it: always a prefix, as a worker goes in order

    @property
    def is_busy(self) -> bool:
        return self.num_reported < len(self.chunk)

    def current(self) -> tuple[int, float] | None:
        """(position in chunk, start time) of the item being scored; None if the worker is mid-update."""
        position, started_at = self.progress[_POSITION], self.progress[_STARTED_AT]
        if self.progress[_POSITION] != position:
            return None
        return int(position), started_at


def _stop_workers(workers: list[_Worker]) -> None:
    """Ask workers to exit, kill those still running after a second, and close their pipes."""
    for worker in workers:
        try:
            worker.conn.send(None)
        except OSError:
            pass
    deadline = time.monotonic() + 1.0
    for worker in workers:
        worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout=5.0)
        worker.conn.close()
    workers.clear()


class ScoringPool:
    """num_workers processes scoring with the function named by spec; started on first use, then reused."""

    def __init__(self, spec: str | None, num_workers: int, timeout_s: float) -> None:
        assert num_workers >= 1, f"ScoringPool needs num_workers >= 1, got {num_workers}"
        self.spec = spec
        self.num_workers = num_workers
        self.timeout_s = timeout_s
        self._ctx = multiprocessing.get_context(_START_METHOD)
        if _START_METHOD == "forkserver":
            self._ctx.set_forkserver_preload(_FORKSERVER_PRELOAD)  # no effect once the forkserver runs
        self._workers: list[_Worker] = []  # mutated in place: the finalizer holds this list
        self._finalizer = weakref.finalize(self, _stop_workers, self._workers)

    def close(self) -> None:
        """Stop the workers; a later run() starts new ones."""
        _stop_workers(self._workers)

    def run(self, items: list[RewardItem]) -> tuple[list[Outcome], set[int]]:
        """Score every item in the workers.

        Returns:
            One (score, extra, traceback) per item, and the indices of items that ran past timeout_s (scored 0.0).

        Raises:
            RuntimeError: a worker could not load the function, or did not start.
        """
        try:
            return self._run(items)
        except BaseException:
            _stop_workers(self._workers)  # workers may hold half-done chunks: start clean next time
            raise

    def _run(self, items: list[RewardItem]) -> tuple[list[Outcome], set[int]]:
        while len(self._workers) < self.num_workers:
            self._workers.append(self._start_worker())
        chunk_size = min(_MAX_CHUNK_SIZE, max(1, math.ceil(len(items) / (self.num_workers * _CHUNKS_PER_WORKER))))
        queue = deque(
            list(range(start, min(start + chunk_size, len(items)))) for start in range(0, len(items), chunk_size)
        )
        outcomes: list[Outcome | None] = [None] * len(items)
        timed_out: set[int] = set()
        while queue or any(w.is_busy for w in self._workers):
            # 1. hand chunks to idle workers
            for worker in self._workers:
                if worker.is_ready and not worker.is_busy and queue:
                    self._send_chunk(worker, queue, items)
            # 2. sleep until a message, a worker's death or the nearest deadline
            wait(
                [w.conn for w in self._workers] + [w.process.sentinel for w in self._workers],
                timeout=self._seconds_to_next_deadline(),
            )
            # 3. take results; replace workers that died or overran a deadline
            for slot, worker in enumerate(self._workers):
                if not self._drain(worker, outcomes):
                    self._on_death(slot, queue, outcomes)
                else:
                    self._check_deadline(slot, queue, outcomes, timed_out)
        assert all(outcome is not None for outcome in outcomes), "scoring pool lost an item"
        return outcomes, timed_out  # type: ignore[return-value]

    def _start_worker(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        progress = self._ctx.RawArray("d", 2)
        process = self._ctx.Process(
            target=_worker_main, args=(child_conn, self.spec, progress), name="reward-worker", daemon=True
        )  # daemon: dies with the caller even if close() is never reached
        process.start()
        child_conn.close()  # so that the worker's death reads as EOF here
        return _Worker(process=process, conn=parent_conn, progress=progress, spawned_at=time.monotonic())

    def _send_chunk(self, worker: _Worker, queue: deque[list[int]], items: list[RewardItem]) -> None:
        chunk = queue.popleft()
        # The worker is idle in recv(): nobody else writes its progress now.
        worker.progress[_STARTED_AT], worker.progress[_POSITION] = time.monotonic(), 0
        try:
            worker.conn.send([(i, items[i]) for i in chunk])
        except OSError:  # it just died: step 3 replaces it
            queue.appendleft(chunk)
            return
        worker.chunk, worker.num_reported = chunk, 0

    def _seconds_to_next_deadline(self) -> float:
        now, deadlines = time.monotonic(), []
        for worker in self._workers:
            if not worker.is_ready:
                deadlines.append(worker.spawned_at + _STARTUP_TIMEOUT_S)
            elif worker.is_busy:
                current = worker.current()
                deadlines.append(current[1] + self.timeout_s if current else now)
        return max(0.0, min(deadlines) - now) if deadlines else 1.0

    def _drain(self, worker: _Worker, outcomes: list[Outcome | None]) -> bool:
        """Handle every message the worker has sent; False if the worker is dead."""
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if message[0] == "ready":
                    if message[1] is not None:
                        raise RuntimeError(f"reward worker could not load reward function {self.spec!r}:\n{message[1]}")
                    worker.is_ready = True
                    continue
                for index, score, extra, tb in message[1]:
                    expected = worker.chunk[worker.num_reported]
                    assert index == expected, f"reward worker answered item {index}, expected {expected}"
                    outcomes[index] = (score, extra, tb)
                    worker.num_reported += 1
        except (EOFError, OSError):
            return False
        return worker.process.is_alive()

    def _replace(self, slot: int, queue: deque[list[int]], blamed_position: int | None) -> int | None:
        """Kill the worker in slot, requeue its unfinished items except the blamed one, start a fresh worker.

        Returns:
            The item index at blamed_position (the worker's recorded position if None), or None if it was idle.
        """
        worker = self._workers[slot]
        worker.process.kill()
        worker.process.join(timeout=5.0)
        worker.conn.close()
        self._workers[slot] = self._start_worker()
        if not worker.is_busy:
            return None
        position = int(worker.progress[_POSITION]) if blamed_position is None else blamed_position
        position = max(position, worker.num_reported)  # results already in were not the culprit
        rest = worker.chunk[worker.num_reported : position] + worker.chunk[position + 1 :]
        if rest:
            queue.appendleft(rest)
        return worker.chunk[position]

    def _on_death(self, slot: int, queue: deque[list[int]], outcomes: list[Outcome | None]) -> None:
        worker = self._workers[slot]
        worker.process.join(timeout=1.0)  # its pipe closed first: wait for the exit code
        if not worker.is_ready:
            raise RuntimeError(
                f"reward worker exited with code {worker.process.exitcode} before loading reward function "
                f"{self.spec!r}; is the caller's __main__ import-safe (`if __name__ == '__main__':`)?"
            )
        exitcode = worker.process.exitcode
        index = self._replace(slot, queue, blamed_position=None)  # the item it was on killed it
        if index is not None:
            outcomes[index] = (0.0, {}, f"reward worker process died (exit code {exitcode}) while scoring this item\n")

    def _check_deadline(
        self, slot: int, queue: deque[list[int]], outcomes: list[Outcome | None], timed_out: set[int]
    ) -> None:
        worker, now = self._workers[slot], time.monotonic()
        if not worker.is_ready:
            if now - worker.spawned_at > _STARTUP_TIMEOUT_S:
                raise RuntimeError(f"reward worker did not start within {_STARTUP_TIMEOUT_S:.0f} s")
            return
        current = worker.current() if worker.is_busy else None
        if current is not None and now - current[1] > self.timeout_s:
            index = self._replace(slot, queue, blamed_position=current[0])
            assert index is not None, "a busy worker has an item to blame"
            outcomes[index] = (0.0, {}, None)
            timed_out.add(index)
