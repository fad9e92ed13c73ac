"""Tool functions for the agent tests, loaded by path like user tools ("/path/tool_fns.py:name")."""

import os
import subprocess
import time
from pathlib import Path
from typing import Literal


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first addend.
        b: the second addend.
    """
    return a + b


def describe(kind: Literal["cat", "dog"], count: int | None = None, tags: list[str] | None = None) -> str:
    """Describe animals.

    Args:
        kind: which animal.
        count: how many.
        tags: labels to attach.
    """
    return f"{count or 1} {kind} {','.join(tags or [])}"


def check_answer(answer: str, *, ground_truth: str = "") -> str:
    """Check an answer against the sample's ground truth (a hidden argument from tools_kwargs).

    Args:
        answer: the proposed answer.
    """
    return "correct" if answer.strip() == ground_truth else "wrong"


def sleep_then_pid(seconds: float) -> str:
    """Sleep, then report the process id.

    Args:
        seconds: how long to sleep.
    """
    time.sleep(seconds)
    return str(os.getpid())


def rendezvous(folder: str, expected: int) -> str:
    """Mark arrival in folder, then wait until `expected` calls have arrived (proves they run at once).

    Args:
        folder: a shared directory.
        expected: how many calls must be inside at the same time.
    """
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(Path(folder).iterdir())) < expected:
        if time.monotonic() > deadline:
            return "alone"
        time.sleep(0.01)
    return "met"


def raises(message: str) -> str:
    """Raise a ValueError.

    Args:
        message: the error message.
    """
    raise ValueError(message)


def hangs() -> str:
    """Never return."""
    while True:
        time.sleep(1)


def prints_100mb() -> None:
    """Print 100 MB and return nothing."""
    chunk = "x" * (1 << 20)
    for _ in range(100):
        print(chunk)


def returns_big() -> str:
    """Return a 10 MB string."""
    return "y" * 10_000_000


def exits_hard() -> str:
    """Kill its own process."""
    os._exit(7)


def no_docstring(a: int) -> int:
    return a


def no_hint(a) -> int:  # noqa: ANN001
    """Missing a type hint.

    Args:
        a: something.
    """
    return a


def write_pid_then_hang(folder: str) -> str:
    """Write this process's id to folder/pid, then never return.

    Args:
        folder: where to write the pid.
    """
    Path(folder, "pid").write_text(str(os.getpid()))
    while True:
        time.sleep(1)


def spawn_then_hang(folder: str) -> str:
    """Start a long-running child process, write its pid to folder/child, then never return.

    Args:
        folder: where to write the child's pid.
    """
    child = subprocess.Popen(["sleep", "300"])
    Path(folder, "child").write_text(str(child.pid))
    while True:
        time.sleep(1)
