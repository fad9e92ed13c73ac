"""The local Ray instance a run starts: loopback-only, recorded in the run dir, ended with its driver.

Loopback. Ray's servers listen on loopback only when the node IP is a loopback address: the dashboard agent binds
gRPC to `get_localhost_ip() if is_localhost(self.ip) else get_all_interfaces_ip()` (ray/dashboard/agent.py), the
runtime-env agent binds to the node IP (ray/_private/runtime_env/agent/main.py), and the GCS server, raylet and core
workers follow the same rule. But on Linux `ray.init` never keeps a loopback node IP: `_node_ip_address="127.0.0.1"`
is swapped for the routable address by `services.resolve_ip_for_localhost`, and with no address
`services.get_node_ip_address` picks the routable one, unless `ray_constants.ENABLE_RAY_CLUSTER` is false: the
single-node mode Ray uses by default on macOS and Windows (ray-project/ray#18904, #19362, #19810), switched by
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0. Ray reads that variable once, at import, long before a run starts, so
`_loopback_only` sets the variable (inherited by Ray's processes) and the constant around `ray.init`, and
`start_local_ray` checks the node IP afterwards. Joining a cluster never comes here: Ray's settings stay untouched.

Killed driver. `<run_dir>/.ray_instance.json` (`rlhf.instance_reaper.InstanceRecord`) lists the instance's processes,
kept current by a thread while the run lives and removed at a clean shutdown. A reaper process ends the instance when
the driver dies without shutting it down; if the reaper died too, the next start with the same run dir does it. Only
processes in the record with their recorded create time are touched, and never while the recording driver lives.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import ray
from ray._private import ray_constants  # holds the import-time copy of RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER

from rlhf.instance_reaper import InstanceRecord, ProcessId, descendants, end_processes

logger = logging.getLogger(__name__)

RECORD_NAME = ".ray_instance.json"
SINGLE_NODE_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_REFRESH_S = 2.0  # how often the record picks up new workers (and their children) while the run lives


def record_path(run_dir: Path) -> Path:
    """Where the record of a run's local Ray instance lives."""
    return Path(run_dir) / RECORD_NAME


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback (::ffff:127.0.0.1, how a dual-stack gRPC socket shows it)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Ray's single-node mode for the `ray.init` inside: node IP 127.0.0.1 (or ::1), every server on loopback."""
    saved_env, saved_flag = os.environ.get(SINGLE_NODE_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_NODE_SWITCH] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(SINGLE_NODE_SWITCH, None)
        else:
            os.environ[SINGLE_NODE_SWITCH] = saved_env


def clean_up_killed_instance(run_dir: Path) -> int:
    """End what the local Ray instance recorded in `run_dir` left behind, if its driver is dead.

    Returns:
        How many processes of that instance were ended (0 when there is no record or nothing was alive).

    Raises:
        RuntimeError: the recording driver is another live process whose instance is still running.
    """
    path = record_path(run_dir)
    try:
        record = InstanceRecord.read(path)
    except ValueError as e:
        logger.warning("%s; ignoring it (no process is ended)", e)
        path.unlink(missing_ok=True)
        return 0
    if record is None:
        return 0
    driver = record.driver.find()  # None if it exited, or if its pid now names another process
    is_own = driver is not None and driver.pid == os.getpid()  # this process's earlier instance, shut down since
    if driver is not None and not is_own:
        if record.live_processes():
            raise RuntimeError(
                f"run dir {run_dir} is in use: driver pid {record.driver.pid} is alive with its local Ray instance "
                f"(session {record.session_dir}); give this run another trainer.experiment_name or stop that one"
            )
        path.unlink(missing_ok=True)  # that driver shut its instance down but kept running
        return 0
    reaper = record.reaper.find() if record.reaper else None
    if reaper is not None:  # the dead driver's reaper may be ending these same processes: stop it first
        end_processes([reaper])
    num_ended = end_processes(record.live_processes())
    path.unlink(missing_ok=True)
    if is_own:
        if num_ended:
            logger.info("ended %d leftover processes of this process's previous Ray instance", num_ended)
    elif num_ended:
        logger.warning(
            "cleaned up %d processes of the local Ray instance left by a killed run in %s (driver pid %d, Ray "
            "session %s)",
            num_ended,
            run_dir,
            record.driver.pid,
            record.session_dir,
        )
    else:
        logger.info("the previous run in %s was killed; its local Ray instance had already exited", run_dir)
    return num_ended


class _RecordedInstance:
    """Keeps one instance's record current (new workers) and removes it, and the reaper, at shutdown."""

    def __init__(self, path: Path, record: InstanceRecord, reaper: subprocess.Popen) -> None:
        self.path, self.record, self.reaper = path, record, reaper
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._watch, name="ray-instance-record", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(_REFRESH_S):
            live_roots = [proc for proc in (root.find() for root in self.record.roots) if proc is not None]
            if not live_roots:  # ray.shutdown() ended the instance: a clean shutdown
                self.close()
                return
            processes = _ids(descendants(live_roots + self.record.live_processes()))
            if processes != self.record.processes:
                self.record.processes = processes
                try:
                    self.record.write(self.path)
                except OSError as e:  # e.g. the run dir was deleted under us; the reaper still has the old list
                    logger.warning("cannot update the Ray instance record %s: %s", self.path, e)

    def close(self) -> None:
        """Stop the watcher and the reaper, then remove the record (if it is still this instance's)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        self.reaper.terminate()
        try:
            self.reaper.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.reaper.kill()
            self.reaper.wait()
        with contextlib.suppress(ValueError):
            current = InstanceRecord.read(self.path)
            if current is not None and current.instance_id == self.record.instance_id:
                self.path.unlink(missing_ok=True)


_active: _RecordedInstance | None = None


def _ids(procs: list[psutil.Process]) -> list[ProcessId]:
    ids = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            ids.append(ProcessId.of(proc))
    return sorted(ids, key=lambda p: p.pid)


def _session_dir() -> str | None:
    node = getattr(ray._private.worker, "_global_node", None)  # no public API names the session dir
    return node.get_session_dir_path() if node is not None else None


def start_local_ray(num_cpus: int, run_dir: Path) -> InstanceRecord:
    """Start a new local Ray instance bound to loopback, first ending what a killed run in `run_dir` left behind.

    Args:
        num_cpus: CPUs the instance offers to the scheduler.
        run_dir: the run's directory; the record `.ray_instance.json` lives there.

    Returns:
        The record written for the new instance.

    Raises:
        RuntimeError: Ray is already initialized here, another live run owns `run_dir`, or Ray advertised a
            non-loopback node IP (a Ray version where the single-node switch no longer applies).
    """
    global _active
    if ray.is_initialized():
        raise RuntimeError("Ray is already initialized in this process; start_local_ray starts a new instance")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if _active is not None:  # this process's previous instance (ray.shutdown() was called since)
        _active.close()
        _active = None
    clean_up_killed_instance(run_dir)

    me = psutil.Process()
    children_before = {child.pid for child in me.children()}
    with _loopback_only():
        # address="local": a new instance even if `ray start` left a cluster address in /tmp/ray/ray_current_cluster.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    node_ip = ray.util.get_node_ip_address()
    if not is_loopback(node_ip):
        ray.shutdown()
        raise RuntimeError(
            f"the local Ray instance advertises node IP {node_ip}, not loopback: {SINGLE_NODE_SWITCH}=0 no longer "
            f"confines Ray {ray.__version__} to loopback"
        )
    roots = _ids([child for child in me.children() if child.pid not in children_before])
    record = InstanceRecord(
        instance_id=uuid.uuid4().hex,
        driver=ProcessId.of(me),
        session_dir=_session_dir(),
        roots=roots,
        processes=_ids(descendants([p for p in (r.find() for r in roots) if p is not None])),
    )
    path = record_path(run_dir)
    record.write(path)
    # Its own session: Ctrl-C in the terminal and a kill of the driver's process group leave it to do its job.
    reaper = subprocess.Popen(
        [sys.executable, "-m", "rlhf.instance_reaper", str(path), record.instance_id, str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    with contextlib.suppress(psutil.Error):
        record.reaper = ProcessId.of(psutil.Process(reaper.pid))
    record.write(path)
    _active = _RecordedInstance(path, record, reaper)
    logger.info("local Ray instance on %s, %d CPUs, %d processes recorded in %s", node_ip, num_cpus, len(roots), path)
    return record


def stop_local_ray() -> None:
    """Shut down the local Ray instance this process started, stop its reaper and remove its record (idempotent)."""
    global _active
    active, _active = _active, None
    if active is None:
        return
    if ray.is_initialized():
        ray.shutdown()
    active.close()


# Registered after `import ray`, so it runs before Ray's own exit hook: the record goes away only after Ray's shutdown.
atexit.register(stop_local_ray)
