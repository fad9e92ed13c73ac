"""The executor runs calls concurrently in killable workers; every failure is a counted error text, never a crash."""

import os
import time
from pathlib import Path

import pytest

from rlhf.agent.builtin_tools import make_python_tool
from rlhf.agent.executor import ToolExecutor
from rlhf.agent.parsing import ToolCall
from rlhf.agent.sandbox import SandboxLimits
from rlhf.agent.tools import ToolRegistry, load_tools, tool_from_function

FNS = str(Path(__file__).with_name("tool_fns.py"))
NAMES = ["add", "check_answer", "sleep_then_pid", "rendezvous", "raises", "hangs", "prints_100mb", "returns_big"]
NAMES += ["exits_hard", "write_pid_then_hang", "spawn_then_hang"]


@pytest.fixture(scope="module")
def executor() -> ToolExecutor:
    registry = load_tools(["calculator", "python", *[f"{FNS}:{n}" for n in NAMES]])
    with ToolExecutor(registry, num_workers=4, timeout_s=3.0, max_output_chars=1000) as executor:
        executor.start()
        yield executor


def test_good_calls(executor: ToolExecutor) -> None:
    results = executor.run(
        [
            ToolCall("calculator", {"expression": "2 ** 70"}),
            ToolCall("add", {"a": 2, "b": 40}),
            ToolCall("python", {"code": "print(6 * 7)"}),
        ]
    )
    assert [r.content for r in results] == ["1180591620717411303424", "42", "42\n"]
    assert not any(r.is_error or r.is_timeout for r in results)
    assert [r.name for r in results] == ["calculator", "add", "python"]


def test_every_kind_of_bad_call_is_an_error_text_and_the_pool_recovers(executor: ToolExecutor) -> None:
    calls = [
        ToolCall("invented_tool", {"x": 1}),
        ToolCall("add", {"a": "one", "b": 2}),
        ToolCall("add", {"a": 1}),
        ToolCall("raises", {"message": "bad input"}),
        ToolCall("hangs", {}),
        ToolCall("prints_100mb", {}),
        ToolCall("returns_big", {}),
        ToolCall("exits_hard", {}),
        ToolCall("calculator", {"expression": "1/0"}),
    ]
    results = executor.run(calls)
    contents = [r.content for r in results]
    assert contents[0].startswith("Error: unknown tool 'invented_tool'; available tools: calculator, python, add")
    assert contents[1] == "Error: invalid arguments for tool 'add': 'one' is not of type 'integer'"
    assert contents[2] == "Error: invalid arguments for tool 'add': 'b' is a required property"
    assert contents[3] == "Error: tool 'raises' raised ValueError: bad input"
    assert contents[4] == "Error: tool 'hangs' did not finish within 3 s"
    assert contents[5].startswith(
        "Error: the output of tool 'prints_100mb' has 104857700 characters, over the limit of 1000; its first 1000"
    )
    assert contents[5].endswith("x" * 1000) and len(contents[5]) < 1200
    assert contents[6].startswith("Error: the output of tool 'returns_big' has 10000000 characters")
    assert contents[7] == "Error: tool 'exits_hard' crashed (its process exited with code 7)"
    assert contents[8] == "Error: division by zero"  # a ToolError: its own message, verbatim
    assert all(r.is_error for r in results)
    assert [r.is_timeout for r in results] == [False, False, False, False, True, False, False, False, False]
    # Killed and crashed workers were replaced: the pool still serves calls.
    assert [r.content for r in executor.run([ToolCall("add", {"a": 1, "b": 1})] * 6)] == ["2"] * 6


def test_a_timed_out_call_is_killed(executor: ToolExecutor, tmp_path: Path) -> None:
    (result,) = executor.run([ToolCall("write_pid_then_hang", {"folder": str(tmp_path)})])
    assert result.is_timeout and result.is_error
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):  # the worker was killed (and reaped) before the result came back
        os.kill(pid, 0)


def _is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a killed orphan may stay a zombie until init reaps it


def test_a_timed_out_call_takes_its_child_processes_with_it(executor: ToolExecutor, tmp_path: Path) -> None:
    (result,) = executor.run([ToolCall("spawn_then_hang", {"folder": str(tmp_path)})])
    assert result.is_timeout
    child = int((tmp_path / "child").read_text())
    deadline = time.monotonic() + 10
    while _is_running(child) and time.monotonic() < deadline:  # SIGKILL delivery is asynchronous
        time.sleep(0.05)
    assert not _is_running(child)


def test_calls_run_concurrently_in_separate_processes(executor: ToolExecutor, tmp_path: Path) -> None:
    # Each call waits until all 4 are inside at once: only a pool running them concurrently returns "met".
    results = executor.run([ToolCall("rendezvous", {"folder": str(tmp_path), "expected": 4})] * 4)
    assert [r.content for r in results] == ["met"] * 4
    assert len(list(tmp_path.iterdir())) == 4  # four distinct worker pids
    assert all(int(p.name) != os.getpid() for p in tmp_path.iterdir())


def test_sandboxed_python_calls_run_concurrently(executor: ToolExecutor, tmp_path: Path) -> None:
    code = (
        "import os, time, pathlib\n"
        f"folder = pathlib.Path({str(tmp_path)!r})\n"
        "(folder / str(os.getpid())).touch()\n"
        "while len(list(folder.iterdir())) < 3:\n"
        "    time.sleep(0.01)\n"
        "print('met')\n"
    )
    results = executor.run([ToolCall("python", {"code": code})] * 3)
    assert [r.content for r in results] == ["met\n"] * 3


def test_row_restrictions_and_hidden_arguments(executor: ToolExecutor) -> None:
    tools_kwargs = {"check_answer": {"create_kwargs": {"ground_truth": "4"}, "execute_kwargs": {}}}
    results = executor.run(
        [
            ToolCall("check_answer", {"answer": "4"}),
            ToolCall("check_answer", {"answer": "5"}),
            ToolCall("check_answer", {"answer": "4", "ground_truth": "4"}),  # the model may not set it
            ToolCall("add", {"a": 1, "b": 2}),  # not in this row's tools
        ],
        allowed=["check_answer", "calculator"],
        tools_kwargs=tools_kwargs,
    )
    assert [r.content for r in results] == [
        "correct",
        "wrong",
        "Error: invalid arguments for tool 'check_answer': unexpected argument 'ground_truth'",
        "Error: unknown tool 'add'; available tools: calculator, check_answer",
    ]


def test_isolated_tool_past_the_deadline_is_a_timeout() -> None:
    python = tool_from_function(make_python_tool(SandboxLimits(timeout_s=5)), "k", is_isolated=True)
    with ToolExecutor(ToolRegistry([python]), num_workers=1, timeout_s=0.5) as executor:
        (result,) = executor.run([ToolCall("python", {"code": "import time\ntime.sleep(3)"})])
    assert result.is_timeout and result.content == "Error: tool 'python' did not finish within 0.5 s"


def test_bad_limits_name_the_key() -> None:
    with pytest.raises(ValueError, match="agent.tool_timeout_s=0 must be > 0"):
        ToolExecutor(ToolRegistry(), timeout_s=0)
    with pytest.raises(ValueError, match="agent.num_tool_workers=0 must be >= 1"):
        ToolExecutor(ToolRegistry(), num_workers=0)
