"""ToolProcessPool: worker processes that call tool functions by spec, each call held to a deadline and killable.

Like the reward pool (rlhf/rewards/pool.py), workers load functions by spec, and a worker that overruns is killed
and replaced. Unlike it, a tool call is one message each way (calls are few and slow, so chunking buys nothing), the
pool is thread-safe (each calling thread borrows an idle worker, so N threads run N calls at once, up to
num_workers), and workers are fresh interpreters started with subprocess rather than multiprocessing children:
multiprocessing's forkserver and spawn re-import the caller's __main__ in every child, which in a driver or a Ray
actor costs seconds per worker. Each worker leads its own process group, so killing it also ends any processes its
tool started. The deadline starts when the worker has loaded the function (a slow first import is not the call's
fault). This module stays import-light: every worker imports it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal

from rlhf.agent.errors import ToolError
from rlhf.plugins import load_callable

# The worker's command: the caller's sys.path (so specs importable here import there), then the message loop on the
# inherited socket.
_WORKER_COMMAND = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[2]); "
    "from rlhf.agent.tool_pool import worker_entry; worker_entry(int(sys.argv[1]))"
)
# A worker that has not loaded the tool function after this long is broken.
_STARTUP_TIMEOUT_S = 120.0

Status = Literal["ok", "raised", "timeout", "crashed"]


@dataclass
class CallOutcome:
    """How one call in a worker ended."""

    status: Status
    text: str
    """ok: the return value as text (at most max_chars + 1 characters); raised: the error message."""
    num_chars: int = 0
    """ok: length of the full output before it was cut to max_chars + 1."""
    is_tool_error: bool = False
    """raised: a ToolError (text is the tool's own message for the model)."""
    is_tool_timeout: bool = False
    """raised: a ToolError with is_timeout (the tool's own time limit)."""
    exit_code: int | None = None
    """crashed: the worker's exit code."""


class _BoundedSink(io.TextIOBase):
    """A stdout stand-in keeping the first max_chars characters and counting the rest (a tool printing 100 MB
    never makes the worker hold 100 MB)."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars, self.parts, self.num_kept, self.num_chars = max_chars, [], 0, 0

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.num_chars += len(s)
        if self.num_kept < self.max_chars:
            self.parts.append(s[: self.max_chars - self.num_kept])
            self.num_kept += len(self.parts[-1])
        return len(s)

    def getvalue(self) -> str:
        return "".join(self.parts)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _call(fn: Any, kwargs: dict[str, Any], max_chars: int) -> tuple:
    """Call fn with stdout/stderr captured; the reply message for the pool. A None return yields what it printed."""
    sink = _BoundedSink(max_chars + 1)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            value = fn(**kwargs)
    except ToolError as e:
        return ("raised", e.message[: max_chars + 1], True, e.is_timeout)
    except BaseException as e:  # SystemExit too: a tool calling sys.exit must not end the worker
        return ("raised", f"{type(e).__name__}: {e}"[: max_chars + 1], False, False)
    if value is None:
        return ("ok", sink.getvalue(), sink.num_chars)
    text = _as_text(value)
    return ("ok", text[: max_chars + 1], len(text))


def worker_entry(fd: int) -> None:
    """Entry point of a worker process: serve the pool on the socket inherited as file descriptor fd."""
    _worker_main(Connection(fd))


def _worker_main(conn: Connection) -> None:
    """Worker process: receive ("call", spec, kwargs, max_chars), load fn (cached), reply "loaded", call, reply;
    or ("load", specs): load them all and reply "loaded"."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the pool decides when workers stop (and kills them if need be)
    functions: dict[str, Any] = {}
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the pool is gone
            return
        if message is None:
            return
        if message[0] == "load":  # warm-up: load every spec now, so first calls do not pay for imports
            try:
                for spec in message[1]:
                    functions.setdefault(spec, load_callable(spec, "tool"))
            except BaseException as e:
                conn.send(("failed", repr(e)))
                continue
            conn.send(("loaded",))
            continue
        _, spec, kwargs, max_chars = message
        try:
            if spec not in functions:
                functions[spec] = load_callable(spec, "tool")
        except BaseException as e:
            conn.send(("raised", f"cannot load tool {spec!r}: {e}"[: max_chars + 1], False, False))
            continue
        conn.send(("loaded",))
        conn.send(_call(functions[spec], kwargs, max_chars))


@dataclass(eq=False)  # identity hashing: workers live in a set
class _Worker:
    process: subprocess.Popen[bytes]
    conn: Connection

    def stop(self, kill: bool) -> None:
        if not kill:
            with contextlib.suppress(OSError):
                self.conn.send(None)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=1.0)
        if self.process.returncode is None:
            # Not reaped yet, so its pid (= its group id) cannot have been reused: killing the group is safe.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.conn.close()


def _stop_all(workers: set[_Worker]) -> None:
    for worker in list(workers):
        worker.stop(kill=False)
    workers.clear()


class ToolProcessPool:
    """Up to num_workers processes calling tool functions; started on demand, reused, replaced when killed."""

    def __init__(self, num_workers: int) -> None:
        if num_workers < 1:
            raise ValueError(f"agent.num_tool_workers={num_workers} must be >= 1")
        self.num_workers = num_workers
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()  # LIFO: warm workers first
        self._lock = threading.Lock()
        self._workers: set[_Worker] = set()  # every live worker; mutated in place: the finalizer holds it
        self._is_closed = False
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)

    def close(self) -> None:
        """Stop the workers (busy ones are stopped when their call returns)."""
        with self._lock:
            self._is_closed = True
            idle = []
            while not self._idle.empty():
                idle.append(self._idle.get_nowait())
        for worker in idle:
            self._discard(worker, kill=False)

    def start(self, specs: list[str]) -> None:
        """Start every worker now and have each load `specs` (optional: workers also start on demand).

        Raises:
            RuntimeError: a worker could not load a spec or did not start in time.
        """
        with self._lock:
            while len(self._workers) < self.num_workers and not self._is_closed:
                worker = self._start_worker()
                self._workers.add(worker)
                self._idle.put(worker)
        borrowed = [self._acquire() for _ in range(self.num_workers)]
        try:
            for worker in borrowed:
                worker.conn.send(("load", specs))
            for worker in borrowed:
                if not worker.conn.poll(_STARTUP_TIMEOUT_S):
                    raise RuntimeError(f"tool worker did not load {specs} within {_STARTUP_TIMEOUT_S:.0f} s")
                reply = worker.conn.recv()
                if reply[0] != "loaded":
                    raise RuntimeError(f"tool worker could not load {specs}: {reply[1]}")
        except BaseException:
            for worker in borrowed:  # replies may be pending in their pipes: never reuse them
                self._discard(worker, kill=True)
            raise
        for worker in borrowed:
            self._release(worker)

    def call(self, spec: str, kwargs: dict[str, Any], timeout_s: float, max_chars: int) -> CallOutcome:
        """Call the function named by spec with kwargs in a worker; blocks until a worker is free and it returns.

        Thread-safe. The worker is killed and replaced if the call runs past timeout_s or kills its process.

        Returns:
            The outcome; never raises for anything the tool does.

        Raises:
            RuntimeError: the pool is closed, or a worker did not start within the start-up timeout.
        """
        worker = self._acquire()
        try:
            worker.conn.send(("call", spec, kwargs, max_chars))
            if not worker.conn.poll(_STARTUP_TIMEOUT_S):
                self._discard(worker, kill=True)
                raise RuntimeError(f"tool worker did not load {spec!r} within {_STARTUP_TIMEOUT_S:.0f} s")
            reply = worker.conn.recv()
            if reply[0] == "loaded":
                if not worker.conn.poll(timeout_s):
                    self._discard(worker, kill=True)
                    return CallOutcome(status="timeout", text="")
                reply = worker.conn.recv()
        except (EOFError, OSError):
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=1.0)
            exit_code = worker.process.returncode
            self._discard(worker, kill=True)
            return CallOutcome(status="crashed", text="", exit_code=exit_code)
        self._release(worker)
        if reply[0] == "ok":
            return CallOutcome(status="ok", text=reply[1], num_chars=reply[2])
        return CallOutcome(status="raised", text=reply[1], is_tool_error=reply[2], is_tool_timeout=reply[3])

    def _acquire(self) -> _Worker:
        with self._lock:
            if self._is_closed:
                raise RuntimeError("the tool pool is closed")
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                pass
            if len(self._workers) < self.num_workers:
                worker = self._start_worker()
                self._workers.add(worker)
                return worker
        return self._idle.get()  # all workers busy: wait for one

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            if not self._is_closed:
                self._idle.put(worker)
                return
        self._discard(worker, kill=False)

    def _discard(self, worker: _Worker, kill: bool) -> None:
        worker.stop(kill=kill)
        with self._lock:
            self._workers.discard(worker)
            # A thread may be waiting in _acquire for a worker: hand it a fresh one in place of this one.
            if not self._is_closed and self._idle.empty() and len(self._workers) < self.num_workers:
                replacement = self._start_worker()
                self._workers.add(replacement)
                self._idle.put(replacement)

    def _start_worker(self) -> _Worker:
        parent_socket, child_socket = socket.socketpair()
        with child_socket:
            process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_COMMAND, str(child_socket.fileno()), json.dumps(sys.path)],
                pass_fds=[child_socket.fileno()],
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: a kill also ends what its tool started
            )
        # The child's end is closed here, so the worker's death reads as EOF.
        return _Worker(process=process, conn=Connection(parent_socket.detach()))
