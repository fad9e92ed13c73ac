"""The sandbox runs code in a subprocess with time, memory, output and network limits and a clean environment."""

import os
import socket
import time
from pathlib import Path

import pytest

from rlhf.agent.sandbox import SandboxLimits, network_isolation, run_python


def test_runs_code_in_a_child_process_and_captures_both_streams() -> None:
    result = run_python("import os, sys\nprint(os.getpid())\nprint('oops', file=sys.stderr)")
    assert result.ok and result.exit_code == 0
    assert int(result.stdout.strip()) != os.getpid()
    assert result.stderr == "oops\n"


def test_exception_gives_traceback_and_nonzero_exit() -> None:
    result = run_python("x = 1\nraise ValueError('boom')")
    assert result.exit_code == 1 and not result.ok
    assert 'File "main.py", line 2' in result.stderr and "ValueError: boom" in result.stderr
    assert "<string>" not in result.stderr  # the bootstrap's own frame is hidden


def test_wall_time_limit_kills_the_whole_process_group(tmp_path: Path) -> None:
    # The child starts a grandchild that would write a file after 3 s; killing the group must stop it too.
    marker = tmp_path / "grandchild_survived"
    grandchild = f"import time; time.sleep(3); open({str(marker)!r}, 'w')"
    code = f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {grandchild!r}])\ntime.sleep(60)\n"
    result = run_python(code, SandboxLimits(timeout_s=1.0, network="namespace" if _has_netns() else "auto"))
    assert result.timed_out and result.exit_code == -9
    time.sleep(3.5)
    assert not marker.exists()


def test_output_limit_reads_at_most_the_budget_then_kills() -> None:
    # The program would print 100 MB: the parent reads 10 kB and kills it.
    code = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.write(chunk)\n"
    result = run_python(code, SandboxLimits(max_output_bytes=10_000))
    assert result.truncated and not result.ok
    assert len(result.stdout) + len(result.stderr) == 10_000
    assert result.exit_code == -9


def test_memory_limit() -> None:
    result = run_python("x = bytearray(2 * 1024 ** 3)\nprint('allocated')", SandboxLimits(memory_mb=256))
    assert result.memory_exceeded and not result.ok
    assert "allocated" not in result.stdout


def test_temporary_directory_is_fresh_and_removed() -> None:
    result = run_python("import os\nopen('f.txt', 'w').write('hi')\nprint(os.getcwd())\nprint(sorted(os.listdir('.')))")
    workdir, listing = result.stdout.splitlines()
    assert listing == "['f.txt', 'main.py']"
    assert Path(workdir).name.startswith("rlhf-sandbox-") and not Path(workdir).exists()


def test_environment_holds_no_inherited_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "secret-key")
    monkeypatch.setenv("HF_TOKEN", "secret-token")
    result = run_python("import os\nprint(sorted(os.environ))\nprint(os.environ['HOME'] == os.getcwd())")
    names, home_is_workdir = result.stdout.splitlines()
    assert "WANDB_API_KEY" not in names and "HF_TOKEN" not in names and "secret" not in result.stdout
    assert home_is_workdir == "True"


def _has_netns() -> bool:
    return network_isolation("auto") == "namespace"


@pytest.mark.parametrize("mode", ["namespace", "audit_hook"])
def test_network_is_blocked(mode: str) -> None:
    if mode == "namespace" and not _has_netns():
        pytest.skip("no network namespace on this machine")
    # A server the parent can reach: the sandboxed code must not.
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        reachable = socket.create_connection(("127.0.0.1", port), timeout=2)
        reachable.close()
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
        result = run_python(code, SandboxLimits(network=mode))
    assert result.network_isolation == mode
    assert result.exit_code == 1 and "connected" not in result.stdout
    expected = "Network is unreachable" if mode == "namespace" else "network and process access are disabled"
    assert expected in result.stderr


def test_audit_hook_mode_blocks_subprocesses() -> None:
    result = run_python(
        "import subprocess\nsubprocess.run(['true'])\nprint('ran')", SandboxLimits(network="audit_hook")
    )
    assert result.exit_code == 1 and "ran" not in result.stdout
    assert "subprocess.Popen" in result.stderr
