"""The record of a run's Ray instance and the reaper, on real processes (`sleep`, `sh`) standing in for Ray's.

Every process here is started by the test and ended by pid; none starts Ray.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from rlhf.instance_reaper import InstanceRecord, ProcessId, end_processes

_DEADLINE_S = 60.0  # liveness bound for process exits on a loaded machine, not a timing assertion


def _start(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL)


def _dead_process_id() -> ProcessId:
    """The id of a process that has exited (its pid may be reused later; the create time keeps it distinct)."""
    proc = subprocess.Popen(["sleep", "0"])
    ident = ProcessId.of(psutil.Process(proc.pid))
    proc.wait()
    return ident


def _record(driver: ProcessId, processes: list[ProcessId], instance_id: str = "test-instance") -> InstanceRecord:
    return InstanceRecord(
        instance_id=instance_id,
        driver=driver,
        session_dir="/tmp/ray/session_x",
        roots=processes[:1],
        processes=processes,
    )


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + _DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {_DEADLINE_S:.0f} s: {what}")
        time.sleep(0.2)


def test_record_round_trips_and_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    record = _record(ProcessId(11, 1000.25, "python"), [ProcessId(12, 1001.5, "raylet"), ProcessId(13, 1002.0, "gcs")])
    record.reaper = ProcessId(14, 1003.75, "python")
    record.write(path)
    assert InstanceRecord.read(path) == record
    assert InstanceRecord.read(tmp_path / "absent.json") is None
    path.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable Ray instance record"):
        InstanceRecord.read(path)
    path.write_text('{"version": 99}')
    with pytest.raises(ValueError, match="not a version-1"):
        InstanceRecord.read(path)


def test_process_id_finds_only_the_same_process() -> None:
    sleeper = _start("sleep", "300")
    try:
        ident = ProcessId.of(psutil.Process(sleeper.pid))
        assert ident.find() is not None and ident.find().pid == sleeper.pid
        reused = ProcessId(sleeper.pid, ident.create_time - 5.0, ident.name)  # same pid, another process's start
        assert reused.find() is None
    finally:
        sleeper.kill()
        sleeper.wait()
    assert ident.find() is None


def test_end_processes_ends_descendants_too() -> None:
    # sh ignores nothing here; its child sleep is a descendant that must go with it.
    shell = _start("sh", "-c", "sleep 300 & wait")
    _wait_until(lambda: len(psutil.Process(shell.pid).children()) == 1, "sh started its sleep")
    child = psutil.Process(shell.pid).children()[0]
    bystander = _start("sleep", "300")
    try:
        assert end_processes([psutil.Process(shell.pid)], grace_s=5.0) == 2
        assert shell.wait(timeout=_DEADLINE_S) is not None
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
        assert bystander.poll() is None
    finally:
        for proc in (shell, bystander):
            proc.kill()
            proc.wait()


_FAKE_DRIVER = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-m", "rlhf.instance_reaper", sys.argv[1], sys.argv[2], str(os.getpid())],
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
print("started", flush=True)
time.sleep(300)
"""


def _start_fake_driver(record: Path, instance_id: str, stderr_path: Path) -> subprocess.Popen:
    with stderr_path.open("w") as stderr:
        driver = subprocess.Popen(
            [sys.executable, "-c", _FAKE_DRIVER, str(record), instance_id],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert driver.stdout.readline().strip() == "started"
    return driver


def test_reaper_ends_recorded_processes_when_driver_is_killed(tmp_path: Path) -> None:
    instance = _start("sleep", "300")
    bystander = _start("sleep", "300")
    path = tmp_path / "record.json"
    driver = None
    try:
        _record(_dead_process_id(), [ProcessId.of(psutil.Process(instance.pid))]).write(path)
        driver = _start_fake_driver(path, "test-instance", tmp_path / "driver.err")
        reaper = psutil.Process(driver.pid).children()[0]
        driver.kill()
        driver.wait()
        _wait_until(lambda: instance.poll() is not None, "the recorded sleep was ended")
        _wait_until(lambda: not reaper.is_running() or reaper.status() == psutil.STATUS_ZOMBIE, "the reaper exited")
        assert not path.exists()
        assert bystander.poll() is None
        assert (
            f"driver pid {driver.pid} exited without shutting down its local Ray instance; ended 1"
            in (tmp_path / "driver.err").read_text()
        )
    finally:
        for proc in (instance, bystander, driver):
            if proc is not None:
                proc.kill()
                proc.wait()


def test_reaper_leaves_processes_alone_after_a_clean_shutdown(tmp_path: Path) -> None:
    instance = _start("sleep", "300")
    path = tmp_path / "record.json"
    driver = None
    try:
        _record(_dead_process_id(), [ProcessId.of(psutil.Process(instance.pid))]).write(path)
        driver = _start_fake_driver(path, "test-instance", tmp_path / "driver.err")
        reaper = psutil.Process(driver.pid).children()[0]
        path.unlink()  # what a clean shutdown does before the driver exits
        driver.kill()
        driver.wait()
        _wait_until(lambda: not reaper.is_running() or reaper.status() == psutil.STATUS_ZOMBIE, "the reaper exited")
        assert instance.poll() is None
        assert "exited without shutting down" not in (tmp_path / "driver.err").read_text()
    finally:
        for proc in (instance, driver):
            if proc is not None:
                proc.kill()
                proc.wait()
