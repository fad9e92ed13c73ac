"""A local sandbox for untrusted Python: a subprocess with wall-time, memory, file-size and output limits.

The code never runs in the calling process. The child starts in its own session (so a timeout kills its whole
process group), in a fresh temporary directory that is removed afterwards, with a minimal environment (no inherited
secrets such as WANDB_API_KEY). Network: where unprivileged user namespaces work, the child runs under
`unshare --net` and has no network interface but a downed loopback; elsewhere a Python audit hook, installed before
the user code, refuses socket creation and the usual escapes (subprocesses, exec, ctypes). The hook is best effort
(CPython's audit hooks are not a security boundary); the namespace is the real isolation.
"""

from __future__ import annotations

import functools
import logging
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

NetworkMode = Literal["auto", "namespace", "audit_hook"]

# Exit code the bootstrap uses when the user code ran out of memory (a MemoryError under RLIMIT_AS).
MEMORY_EXIT_CODE = 86
_READ_CHUNK = 65536
_UNSHARE_PREFIXES = (
    ("unshare", "--user", "--map-root-user", "--net", "--"),  # unprivileged: a user namespace owns the netns
    ("unshare", "--net", "--"),  # root (or CAP_SYS_ADMIN) without user namespaces
)

# Runs in the child before the user code: limits, the optional audit hook, then the code from main.py.
_BOOTSTRAP = r"""
import os, resource, sys, traceback
memory_bytes, file_bytes, use_hook = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
if use_hook:
    _BLOCKED = ("socket.", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                "os.forkpty", "pty.spawn", "ctypes.dlopen")
    def _audit(event, args):
        if event.startswith(_BLOCKED):
            raise PermissionError(f"network and process access are disabled in this sandbox ({event})")
    sys.addaudithook(_audit)
source = open("main.py", encoding="utf-8").read()
sys.argv = ["main.py"]
namespace = {"__name__": "__main__", "__file__": "main.py", "__builtins__": __builtins__}
try:
    exec(compile(source, "main.py", "exec"), namespace)
except MemoryError:
    sys.stderr.write("MemoryError: the sandbox memory limit was exceeded\n")
    sys.stderr.flush()
    os._exit(MEMORY_EXIT_CODE)
except SystemExit:
    raise
except BaseException as e:
    traceback.print_exception(type(e), e, e.__traceback__.tb_next)  # tb_next: hide this bootstrap's frame
    sys.exit(1)
""".replace("MEMORY_EXIT_CODE", str(MEMORY_EXIT_CODE))


@dataclass(frozen=True)
class SandboxLimits:
    """What one sandboxed run may use."""

    timeout_s: float = 10.0
    """Wall-clock seconds before the whole process group is killed."""
    memory_mb: int = 1024
    """Address-space limit (RLIMIT_AS) of the child; a MemoryError past it sets memory_exceeded."""
    max_output_bytes: int = 64 * 1024
    """stdout + stderr bytes read; past this the child is killed and the output marked truncated."""
    max_file_mb: int = 64
    """Largest file the child may write (RLIMIT_FSIZE)."""
    network: NetworkMode = "auto"
    """"auto": a network namespace where one can be made, else the audit hook."""
    python: str = sys.executable
    """Interpreter that runs the code (the caller's, so its installed packages are importable)."""


@dataclass
class SandboxResult:
    """What a sandboxed run printed and how it ended."""

    stdout: str
    stderr: str
    exit_code: int | None
    """The child's exit status (negative: killed by that signal); None if it could not be reaped."""
    timed_out: bool
    truncated: bool
    """Output went past max_output_bytes (the child was killed there)."""
    memory_exceeded: bool
    network_isolation: str
    """"namespace" or "audit_hook": how network access was blocked."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.truncated or self.memory_exceeded)


@functools.cache
def _working_unshare_prefix() -> tuple[str, ...] | None:
    """The first unshare invocation that can make a network namespace here, or None (probed once per process)."""
    for prefix in _UNSHARE_PREFIXES:
        try:
            done = subprocess.run([*prefix, "true"], capture_output=True, timeout=10, env={"PATH": os.defpath})
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return prefix
    logger.warning("no network namespace available (unshare failed); the sandbox falls back to an audit hook")
    return None


def network_isolation(mode: NetworkMode = "auto") -> str:
    """How the sandbox will block network access under `mode`: "namespace" or "audit_hook".

    Raises:
        RuntimeError: mode="namespace" but no network namespace can be made on this machine.
    """
    if mode == "audit_hook":
        return "audit_hook"
    if _working_unshare_prefix() is not None:
        return "namespace"
    if mode == "namespace":
        raise RuntimeError("sandbox network='namespace' requested, but `unshare --net` fails on this machine")
    return "audit_hook"


def _child_env(workdir: str) -> dict[str, str]:
    # Nothing inherited: API keys and tokens in the caller's environment never reach untrusted code.
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",  # BLAS thread pools reserve address space per thread: keep RLIMIT_AS meaningful
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the child leads its own session: this reaches its children too
    except ProcessLookupError:
        pass


def _wait_exited(pid: int, deadline: float) -> bool:
    """Wait until the child exits or the deadline passes, without reaping it; True if it exited."""
    while time.monotonic() < deadline:
        # WNOWAIT leaves it a zombie: its pid stays reserved until process.wait() reaps it.
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.01)
    return False


def _read_bounded(
    process: subprocess.Popen[bytes], limits: SandboxLimits, deadline: float
) -> tuple[bytes, bytes, bool, bool]:
    """Read stdout and stderr until both close, the deadline, or the byte budget; (stdout, stderr, timed_out,
    truncated). Never holds more than max_output_bytes plus one chunk, whatever the child prints."""
    assert process.stdout is not None and process.stderr is not None, "pipes were requested"
    buffers = {process.stdout.fileno(): bytearray(), process.stderr.fileno(): bytearray()}
    budget = limits.max_output_bytes
    timed_out = truncated = False
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map() and not (timed_out or truncated):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in selector.select(timeout=remaining):
                try:
                    data = os.read(key.fd, min(_READ_CHUNK, budget + 1))
                except BlockingIOError:
                    continue
                if not data:
                    selector.unregister(key.fd)
                    continue
                if len(data) > budget:
                    buffers[key.fd] += data[:budget]
                    truncated = True
                    break
                buffers[key.fd] += data
                budget -= len(data)
    return bytes(buffers[process.stdout.fileno()]), bytes(buffers[process.stderr.fileno()]), timed_out, truncated


def run_python(code: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `code` as a Python program in a sandboxed subprocess and collect its output.

    Safe to call from several threads at once (each call has its own process and directory).

    Args:
        code: the program's source; it runs as `__main__` from main.py in a fresh temporary directory.
        limits: time, memory, output and file-size limits, and how to block the network.

    Returns:
        stdout/stderr (decoded as UTF-8 with replacement, at most max_output_bytes together), the exit code, and
        whether the run timed out, was truncated, or ran out of memory.

    Raises:
        RuntimeError: limits.network="namespace" but no network namespace can be made here.
    """
    isolation = network_isolation(limits.network)
    prefix = _working_unshare_prefix() if isolation == "namespace" else None
    with tempfile.TemporaryDirectory(prefix="rlhf-sandbox-", ignore_cleanup_errors=True) as workdir:
        with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as f:
            f.write(code)
        memory_bytes, file_bytes = limits.memory_mb * 2**20, limits.max_file_mb * 2**20
        command = [*(prefix or ()), limits.python, "-I", "-c", _BOOTSTRAP, str(memory_bytes), str(file_bytes)]
        command.append("1" if isolation == "audit_hook" else "0")
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=_child_env(workdir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: one killpg ends it and anything it started
        )
        deadline = time.monotonic() + limits.timeout_s
        try:
            stdout, stderr, timed_out, truncated = _read_bounded(process, limits, deadline)
            # A child that closed its pipes and lives on is still held to the deadline.
            if not (timed_out or truncated) and not _wait_exited(process.pid, deadline):
                timed_out = True
        finally:
            # The child is a zombie or alive here, so its pid (= its group id) cannot have been reused: killing the
            # group is safe, and ends whatever it left running in it. Then reap it.
            _kill_group(process)
            process.wait()
            process.stdout.close()  # type: ignore[union-attr]
            process.stderr.close()  # type: ignore[union-attr]
    exit_code = process.returncode
    return SandboxResult(
        stdout=stdout.decode("utf-8", errors="replace"),
        stderr=stderr.decode("utf-8", errors="replace"),
        exit_code=exit_code,
        timed_out=timed_out,
        truncated=truncated,
        memory_exceeded=exit_code == MEMORY_EXIT_CODE,
        network_isolation=isolation,
    )
