"""The local Ray instance a run starts: loopback-only listeners, and nothing left behind after its driver is killed.

Drivers are real `python` subprocesses calling `rlhf.ray_setup.start_ray`, as `python -m rlhf.main` does. Two Ray
starts are shared by the slow tests: driver A (listeners; then killed together with its reaper) and driver B (the
re-run that cleans up after A; then killed alone, for its reaper). The tests end only what they started, by pid: the
drivers, a `sleep`, and the processes the drivers' records list.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import ray

from rlhf import ray_setup
from rlhf.config import TrainerConfig
from rlhf.instance_reaper import InstanceRecord, ProcessId, end_processes
from rlhf.local_ray import (
    SINGLE_NODE_SWITCH,
    clean_up_killed_instance,
    is_loopback,
    record_path,
    start_local_ray,
    stop_local_ray,
)
from rlhf.ray_setup import check_reachable, start_ray
from rlhf.schema import ConfigError

_REPO = Path(__file__).resolve().parents[2]
_STARTUP_DEADLINE_S = 300.0  # liveness bounds on a loaded 2-core machine, not timing assertions
_EXIT_DEADLINE_S = 90.0

# A driver: start Ray as the RL/SFT drivers do, create an actor with runtime_env env_vars (the project's use of the
# runtime-env agent), report what Ray says, then hold until killed.
_DRIVER = """
import json, logging, os, shutil, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
import ray
from rlhf.config import TrainerConfig
from rlhf.ray_setup import start_ray, worker_env

start_ray(TrainerConfig(num_devices_per_node=1), run_dir=Path(sys.argv[1]))

@ray.remote(num_cpus=0)
class Probe:
    def report(self):
        return os.environ.get("RLHF_PROBE"), os.getpid(), shutil.which("ninja"), os.environ["PATH"]

env = {**worker_env(TrainerConfig(num_devices_per_node=1), "cpu"), "RLHF_PROBE": "on"}
probe = Probe.options(runtime_env={"env_vars": env}).remote()
value, pid, ninja, path = ray.get(probe.report.remote())
nodes = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
print(json.dumps({"probe_env": value, "probe_pid": pid, "node_ips": nodes, "ninja": ninja, "path": path,
                  "driver_path": os.environ["PATH"]}), flush=True)
time.sleep(3600)
"""


@dataclass
class Driver:
    proc: subprocess.Popen
    run_dir: Path
    stdout: Path
    stderr: Path
    report: dict = field(default_factory=dict)
    records: list[InstanceRecord] = field(default_factory=list)  # every record seen, for the final clean-up

    def record(self) -> InstanceRecord:
        record = InstanceRecord.read(record_path(self.run_dir))
        assert record is not None, f"no Ray instance record in {self.run_dir}"
        self.records.append(record)
        return record


def _start_driver(run_dir: Path, name: str) -> Driver:
    stdout, stderr = run_dir.parent / f"{name}.out", run_dir.parent / f"{name}.err"
    with stdout.open("w") as out, stderr.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", _DRIVER, str(run_dir)], stdout=out, stderr=err, cwd=_REPO)
    driver = Driver(proc, run_dir, stdout, stderr)
    deadline = time.monotonic() + _STARTUP_DEADLINE_S
    while not driver.report:
        lines = [line for line in stdout.read_text().splitlines() if line.startswith("{")]
        if lines:
            driver.report = json.loads(lines[-1])
        elif proc.poll() is not None or time.monotonic() > deadline:
            _end_driver(driver)
            raise AssertionError(f"driver {name} did not come up:\n{stderr.read_text()[-3000:]}")
        time.sleep(0.5)
    # Wait until the record lists the probe's worker (the record picks up new workers every 2 s).
    while not any(p.pid == driver.report["probe_pid"] for p in driver.record().processes):
        assert time.monotonic() < deadline, "the record never listed the probe actor's worker"
        time.sleep(0.5)
    return driver


def _end_driver(driver: Driver) -> None:
    """End the driver and whatever its records list that is still alive (ids with create times: pid-reuse safe)."""
    if driver.proc.poll() is None:
        driver.proc.kill()
    driver.proc.wait()
    live = {}
    for record in driver.records:
        for ident in record.processes + ([record.reaper] if record.reaper else []):
            proc = ident.find()
            if proc is not None:
                live[proc.pid] = proc
    end_processes(list(live.values()), grace_s=2.0)


def _listening_sockets(root_pid: int) -> list[tuple[str, str, int]]:
    """(process name, ip, port) of every listening TCP socket and bound UDP socket in the process tree."""
    root = psutil.Process(root_pid)
    names = {proc.pid: proc.name() for proc in [root, *root.children(recursive=True)]}
    found = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.pid not in names:
            continue
        if conn.status == psutil.CONN_LISTEN or (conn.type == socket.SOCK_DGRAM and not conn.raddr):
            found.append((names[conn.pid], conn.laddr.ip, conn.laddr.port))
    return found


@pytest.fixture(scope="module")
def driver_a(tmp_path_factory: pytest.TempPathFactory):
    driver = _start_driver(tmp_path_factory.mktemp("local_ray") / "run", "driver_a")
    yield driver
    _end_driver(driver)


@dataclass
class Rerun:
    killed_record: InstanceRecord  # driver A's record when A and its reaper were SIGKILLed
    left_after_kill: list[ProcessId]  # A's processes alive right after the kill
    bystander: subprocess.Popen  # a `sleep` in no record
    driver_b: Driver  # the re-run with A's run dir


@pytest.fixture(scope="module")
def rerun(driver_a: Driver):
    record = driver_a.record()
    assert record.reaper is not None and record.reaper.find() is not None, "driver A has no live reaper"
    record.reaper.find().kill()  # the reaper dies too (say, an OOM kill of the whole job): only a re-run can help
    driver_a.proc.kill()
    driver_a.proc.wait()
    left = [ident for ident in record.processes if ident.find() is not None]
    bystander = subprocess.Popen(["sleep", "600"])
    driver_b = None
    try:
        driver_b = _start_driver(driver_a.run_dir, "driver_b")
        yield Rerun(record, left, bystander, driver_b)
    finally:
        bystander.kill()
        bystander.wait()
        if driver_b is not None:
            _end_driver(driver_b)


@pytest.mark.slow
def test_local_instance_listens_on_loopback_only(driver_a: Driver) -> None:
    sockets = _listening_sockets(driver_a.proc.pid)
    owners = {name for name, _, _ in sockets}
    assert {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= owners, sockets
    assert [s for s in sockets if not is_loopback(s[1])] == []
    assert len(driver_a.report["node_ips"]) == 1 and is_loopback(driver_a.report["node_ips"][0])
    assert driver_a.report["probe_env"] == "on"  # runtime_env env_vars still reach the actor


@pytest.mark.slow
def test_workers_find_this_environments_ninja_first_and_keep_their_path(driver_a: Driver) -> None:
    """A worker's PATH puts this environment's bin folder before its own PATH (Ray expands ${PATH}), so DeepSpeed's
    op is JIT-built by the same ninja everywhere; another ninja would rebuild it (~45 s) at every switch."""
    report = driver_a.report
    assert report["ninja"] == str(Path(sys.executable).parent / "ninja"), report
    first, rest = report["path"].split(os.pathsep, 1)
    assert first == str(Path(sys.executable).parent) and "${" not in report["path"]
    assert rest.endswith(report["driver_path"].split(os.pathsep, 1)[-1])  # the node's PATH follows, expanded


@pytest.mark.slow
def test_rerun_ends_what_a_killed_run_left(rerun: Rerun) -> None:
    # Ray's own fate-sharing takes gcs_server and raylet down with the driver, but the agents outlive it (~60 s).
    assert {"ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= {ident.name for ident in rerun.left_after_kill}
    messages = re.findall(
        r"cleaned up (\d+) processes of the local Ray instance left by a killed run in (\S+) \(driver pid (\d+)",
        rerun.driver_b.stderr.read_text(),
    )
    assert len(messages) == 1, rerun.driver_b.stderr.read_text()[-3000:]
    num_cleaned, run_dir, driver_pid = messages[0]
    assert int(num_cleaned) >= 2 and run_dir == str(rerun.driver_b.run_dir)
    assert int(driver_pid) == rerun.killed_record.driver.pid
    assert [ident for ident in rerun.left_after_kill if ident.find() is not None] == []
    assert rerun.bystander.poll() is None  # not in the record: untouched
    new_record = rerun.driver_b.record()
    assert (
        new_record.driver.pid == rerun.driver_b.proc.pid and new_record.instance_id != rerun.killed_record.instance_id
    )


@pytest.mark.slow
def test_killed_driver_leaves_no_ray_process(rerun: Rerun) -> None:
    driver = rerun.driver_b
    record = driver.record()
    assert len(record.processes) >= 7, record.processes  # gcs, raylet, monitor, log monitor, 2 agents, workers
    driver.proc.kill()
    driver.proc.wait()
    deadline = time.monotonic() + _EXIT_DEADLINE_S
    while [i for i in record.processes if i.find() is not None] or record.reaper.find() is not None:
        assert time.monotonic() < deadline, [i for i in record.processes if i.find() is not None]
        time.sleep(0.5)
    assert not record_path(driver.run_dir).exists()
    assert re.search(
        rf"driver pid {driver.proc.pid} exited without shutting down its local Ray instance; ended \d+ of its",
        driver.stderr.read_text(),
    )
    assert rerun.bystander.poll() is None


@pytest.mark.slow
def test_ray_shutdown_removes_the_record_and_stops_the_reaper(tmp_path: Path) -> None:
    record = start_local_ray(num_cpus=1, run_dir=tmp_path)
    try:
        assert record_path(tmp_path).exists() and is_loopback(ray.util.get_node_ip_address())
        reaper = record.reaper.find()
        assert reaper is not None and reaper.ppid() == os.getpid()
        assert SINGLE_NODE_SWITCH not in os.environ  # the switch was only set around ray.init
        ray.shutdown()  # what the trainers' cleanup does
        deadline = time.monotonic() + _EXIT_DEADLINE_S
        while record_path(tmp_path).exists() or record.reaper.find() is not None:
            assert time.monotonic() < deadline, "record or reaper still there after ray.shutdown()"
            time.sleep(0.5)
    finally:
        stop_local_ray()


def _sleep_id(proc: subprocess.Popen) -> ProcessId:
    return ProcessId.of(psutil.Process(proc.pid))


def _exited_id() -> ProcessId:
    proc = subprocess.Popen(["sleep", "0"])
    ident = _sleep_id(proc)
    proc.wait()
    return ident


def test_clean_up_ends_only_recorded_processes_of_a_dead_driver(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorded = subprocess.Popen(["sleep", "600"])
    bystander = subprocess.Popen(["sleep", "600"])
    reused = subprocess.Popen(["sleep", "600"])  # its pid is in the record, with another create time
    try:
        reused_id = _sleep_id(reused)
        stale = ProcessId(reused_id.pid, reused_id.create_time - 3.0, "raylet")
        InstanceRecord(
            "old", _exited_id(), "/tmp/ray/session_old", [_sleep_id(recorded)], [_sleep_id(recorded), stale]
        ).write(record_path(tmp_path))
        with caplog.at_level(logging.WARNING, logger="rlhf.local_ray"):
            assert clean_up_killed_instance(tmp_path) == 1
        assert recorded.wait(timeout=_EXIT_DEADLINE_S) is not None
        assert bystander.poll() is None and reused.poll() is None
        assert not record_path(tmp_path).exists()
        assert "cleaned up 1 processes of the local Ray instance left by a killed run" in caplog.text
    finally:
        for proc in (recorded, bystander, reused):
            proc.kill()
            proc.wait()


def test_clean_up_refuses_a_run_dir_whose_driver_lives(tmp_path: Path) -> None:
    driver = subprocess.Popen(["sleep", "600"])
    instance = subprocess.Popen(["sleep", "600"])
    try:
        InstanceRecord("live", _sleep_id(driver), None, [_sleep_id(instance)], [_sleep_id(instance)]).write(
            record_path(tmp_path)
        )
        with pytest.raises(RuntimeError, match=f"driver pid {driver.pid} is alive"):
            clean_up_killed_instance(tmp_path)
        assert driver.poll() is None and instance.poll() is None
        assert record_path(tmp_path).exists()
    finally:
        for proc in (driver, instance):
            proc.kill()
            proc.wait()


def test_joining_a_cluster_keeps_rays_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append((kwargs, os.environ.get(SINGLE_NODE_SWITCH))))
    # No cluster here: its reachability and node-count checks (tested below) are answered as a one-node cluster would.
    monkeypatch.setattr(ray_setup, "check_reachable", lambda address, key: None)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "NodeID": "n" * 12, "NodeManagerAddress": "10.1.2.3"}])
    start_ray(TrainerConfig(ray_address="10.1.2.3:6379"), run_dir=tmp_path)
    assert calls == [({"address": "10.1.2.3:6379", "logging_level": logging.WARNING}, None)]
    assert not record_path(tmp_path).exists()


def test_an_unreachable_or_malformed_cluster_address_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"trainer.ray_address='nohost' is not a Ray cluster address"):
        check_reachable("nohost", "trainer.ray_address")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match=rf"trainer.ray_address='127.0.0.1:{port}': no Ray cluster answers"):
        check_reachable(f"127.0.0.1:{port}", "trainer.ray_address", timeout_s=2)
    check_reachable("auto", "trainer.ray_address")  # Ray resolves these itself
