"""The record of the local Ray instance a run started, and the reaper that ends the instance when its driver dies.

Ray's kernel fate-sharing (PR_SET_PDEATHSIG, `ray._private.utils.set_kill_on_parent_death_linux`) takes the GCS
server, raylet, monitor and log monitor down with a SIGKILLed driver, but not the raylet's children: the dashboard
and runtime-env agents notice the raylet's death, then try to report it to the dead GCS with a 60 s timeout
(`ray._private.process_watcher.report_raylet_error_logs` -> `utils.publish_error_to_driver`), so they outlive the
driver by about a minute; workers follow in a few seconds. The record names every process by (pid, create time), so a
process whose pid was reused by something else is never touched.

The reaper runs as `python -m rlhf.instance_reaper <record> <instance id> <driver pid>`, started by the driver in its
own session (Ctrl-C and a kill of the driver's process group spare it). It imports no Ray, waits for the driver to
exit, and if the record is still there (a clean shutdown removes it first) ends the recorded processes and removes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

logger = logging.getLogger("rlhf.instance_reaper")  # not __main__ when run with -m

# psutil derives create_time from /proc/<pid>/stat in clock ticks (10 ms): one process always reads the same value.
_CREATE_TIME_TOLERANCE_S = 1e-3
RECORD_VERSION = 1


@dataclass(frozen=True)
class ProcessId:
    """One process, named so that a later process reusing the pid does not match."""

    pid: int
    create_time: float
    name: str = ""

    @classmethod
    def of(cls, proc: psutil.Process) -> ProcessId:
        """The id of a live process. Raises psutil.NoSuchProcess if it has exited."""
        with proc.oneshot():
            return cls(proc.pid, proc.create_time(), proc.name())

    def find(self) -> psutil.Process | None:
        """The live process this id names; None if it exited (zombies count as exited) or its pid was reused."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > _CREATE_TIME_TOLERANCE_S:
                return None
            return None if proc.status() == psutil.STATUS_ZOMBIE else proc
        except psutil.Error:
            return None


@dataclass
class InstanceRecord:
    """What a driver started: written right after `ray.init`, kept current while the run lives, removed at shutdown.

    Attributes:
        instance_id: unique per start, so that a reaper or watcher never removes a newer record.
        driver: the process that called `ray.init`.
        session_dir: Ray's session directory (logs), for the user reading a warning.
        roots: the processes `ray.init` started as children of the driver (gcs_server, raylet, monitor, ...).
        processes: the roots and every descendant seen so far (agents, workers, their children).
        reaper: the reaper process watching the driver, once started.
    """

    instance_id: str
    driver: ProcessId
    session_dir: str | None
    roots: list[ProcessId]
    processes: list[ProcessId]
    reaper: ProcessId | None = None
    version: int = field(default=RECORD_VERSION)

    def write(self, path: Path) -> None:
        """Write atomically (temp file + rename): a reader never sees half a record, even if we are killed."""
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> InstanceRecord | None:
        """The record at `path`, or None if there is none.

        Raises:
            ValueError: the file exists but is not a record of this version.
        """
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"unreadable Ray instance record {path}: {e}") from e
        if not isinstance(raw, dict) or raw.get("version") != RECORD_VERSION:
            raise ValueError(f"{path} is not a version-{RECORD_VERSION} Ray instance record")
        try:
            return cls(
                instance_id=raw["instance_id"],
                driver=ProcessId(**raw["driver"]),
                session_dir=raw["session_dir"],
                roots=[ProcessId(**p) for p in raw["roots"]],
                processes=[ProcessId(**p) for p in raw["processes"]],
                reaper=ProcessId(**raw["reaper"]) if raw["reaper"] else None,
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed Ray instance record {path}: {e!r}") from e

    def live_processes(self) -> list[psutil.Process]:
        """The recorded instance processes (reaper excluded) that are still alive with their recorded create time."""
        found = (p.find() for p in self.processes)
        return [proc for proc in found if proc is not None]


def descendants(procs: list[psutil.Process]) -> list[psutil.Process]:
    """`procs` and all their live descendants, each once (one pass over /proc, however many roots)."""
    children_of: dict[int, list[psutil.Process]] = defaultdict(list)
    for proc in psutil.process_iter(["ppid", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE:  # exited already; only its parent can reap it
            children_of[proc.info["ppid"]].append(proc)
    found: dict[int, psutil.Process] = {}
    stack = list(procs)
    while stack:
        proc = stack.pop()
        if proc.pid not in found:
            found[proc.pid] = proc
            stack.extend(children_of.get(proc.pid, []))
    return list(found.values())


def end_processes(procs: list[psutil.Process], grace_s: float = 5.0) -> int:
    """SIGTERM `procs` and their descendants, SIGKILL those still alive after `grace_s`; wait for all to exit.

    Descendants are listed before any signal is sent: once a raylet exits, its workers are re-parented and can no
    longer be found under it.

    Returns:
        How many processes were signalled (alive when this was called).
    """
    targets = descendants(procs)
    for proc in targets:
        with contextlib.suppress(psutil.Error):
            proc.terminate()  # psutil refuses to signal a pid whose create time changed
    alive = _wait_gone(targets, grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    stuck = _wait_gone(alive, grace_s)
    if stuck:
        logger.warning("%d processes did not exit after SIGKILL: %s", len(stuck), [p.pid for p in stuck])
    return len(targets)


def _is_alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (a zombie has exited; only its parent can reap it, which we do for our children)."""
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            with contextlib.suppress(psutil.Error, ChildProcessError):
                proc.wait(timeout=0)
            return False
        return proc.is_running()  # False also when the pid now names a newer process
    except psutil.Error:
        return False


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Poll until every process has exited or `timeout_s` passed; returns those still alive.

    Not `psutil.wait_procs`: for a process that is not our child it waits on pid existence, which a zombie keeps.
    """
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if _is_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if _is_alive(p)]
    return alive


def wait_for_parent_exit(parent: int) -> None:
    """Block until our parent `parent` has exited (pidfd on Linux >= 5.3, else poll for re-parenting).

    Returns at once if it exited before we got here: we were re-parented then, so os.getppid() differs.
    """
    if os.getppid() != parent:
        return
    try:
        pidfd = os.pidfd_open(parent)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        try:
            if os.getppid() == parent:  # still our parent: the pidfd cannot name a process that reused the pid
                select.select([pidfd], [], [])  # readable once the process has terminated
        finally:
            os.close(pidfd)
        return
    while os.getppid() == parent:  # an orphan is re-parented the moment its parent dies
        time.sleep(0.5)


def reap(record_path: Path, instance_id: str, driver_pid: int, grace_s: float = 5.0) -> int:
    """Wait for the driver (our parent, `driver_pid`) to exit; then end what its record lists and remove the record.

    Returns:
        How many processes were ended (0 after a clean shutdown, which removes the record before the driver exits).
    """
    wait_for_parent_exit(driver_pid)
    try:
        record = InstanceRecord.read(record_path)
    except ValueError as e:
        logger.warning("driver exited; not reaping: %s", e)
        return 0
    if record is None or record.instance_id != instance_id:
        return 0  # clean shutdown, or a newer run owns the record now
    num_ended = end_processes(record.live_processes(), grace_s)
    record_path.unlink(missing_ok=True)
    if num_ended:
        logger.warning(
            "driver pid %d exited without shutting down its local Ray instance; ended %d of its processes "
            "(Ray session %s)",
            driver_pid,
            num_ended,
            record.session_dir,
        )
    return num_ended


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m rlhf.instance_reaper <record.json> <instance id> <driver pid>", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reap(Path(argv[0]), argv[1], int(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
