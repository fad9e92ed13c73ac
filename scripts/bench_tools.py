"""Benchmark: do tool calls from many samples run concurrently? (Issue 10: one slow tool must not serialise a batch.)

    .venv/bin/python scripts/bench_tools.py [--num-calls 32] [--sleep-s 0.5]

Times a batch of `num_calls` calls that each sleep `sleep_s` seconds, through the ToolExecutor (function tools in
worker processes, for several pool sizes; the sandboxed python tool, for several thread counts) and through the
AgentLoop (one tool call per sample, all samples' calls in one turn). Serial execution would take
num_calls x sleep_s; ideal concurrency w takes ceil(num_calls / w) x sleep_s. Prints one line per setting.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

from rlhf.agent.env import EnvContext, make_env_factory
from rlhf.agent.executor import ToolExecutor
from rlhf.agent.loop import AgentLoop, SamplingRequest, TurnOutput
from rlhf.agent.parsing import HermesToolParser, ToolCall
from rlhf.agent.tools import load_tools
from rlhf.models.tiny import build_tokenizer

# The benchmarked tool, written to a file and loaded by path like a user's tool. Not defined in this script: each
# worker imports the tool's module, and this script's imports (transformers) would make worker start-up the cost.
SLEEP_TOOL_SOURCE = '''import time


def sleep_tool(seconds: float) -> str:
    """Sleep, then say so.

    Args:
        seconds: how long to sleep.
    """
    time.sleep(seconds)
    return "ok"
'''


def _line(label: str, elapsed: float, num_calls: int, sleep_s: float, width: int) -> str:
    ideal = math.ceil(num_calls / width) * sleep_s
    serial = num_calls * sleep_s
    return (
        f"{label:<38} {elapsed:6.2f} s   ideal {ideal:5.2f} s   serial {serial:5.2f} s   "
        f"speed-up over serial {serial / elapsed:5.1f}x"
    )


def bench_function_tools(sleep_spec: str, num_calls: int, sleep_s: float) -> None:
    registry = load_tools([sleep_spec])
    for workers in (1, 4, 8, 16, 32):
        with ToolExecutor(registry, num_workers=workers, timeout_s=60.0, max_concurrency=64) as executor:
            executor.start()  # workers started and the tool loaded: time the calls, not the start-up
            start = time.perf_counter()
            results = executor.run([ToolCall("sleep_tool", {"seconds": sleep_s})] * num_calls)
            elapsed = time.perf_counter() - start
        assert all(r.content == "ok" for r in results), [r.content for r in results if r.content != "ok"][:1]
        print(_line(f"function tool, {workers:2d} workers", elapsed, num_calls, sleep_s, workers), flush=True)


def bench_sandbox(num_calls: int, sleep_s: float) -> None:
    registry = load_tools(["python"])
    code = f"import time\ntime.sleep({sleep_s})\nprint('ok')"
    for threads in (1, 4, 16):
        with ToolExecutor(registry, timeout_s=60.0, max_concurrency=threads) as executor:
            start = time.perf_counter()
            results = executor.run([ToolCall("python", {"code": code})] * num_calls)
            elapsed = time.perf_counter() - start
        assert all(r.content == "ok\n" for r in results), [r.content for r in results][:1]
        print(_line(f"python sandbox, {threads:2d} threads", elapsed, num_calls, sleep_s, threads), flush=True)


def bench_agent_loop(sleep_spec: str, num_calls: int, sleep_s: float, workers: int) -> None:
    """num_calls samples, each making one sleeping tool call in turn 1 and answering in turn 2."""
    tokenizer = build_tokenizer()
    call_text = "<tool_call>" + json.dumps({"name": "sleep_tool", "arguments": {"seconds": sleep_s}}) + "</tool_call>"

    def generate(contexts: list[list[int]], requests: list[SamplingRequest]) -> list[TurnOutput]:
        is_first_turn = all(len(c) == 1 for c in contexts)
        text = call_text if is_first_turn else "done"
        ids = tokenizer.encode("x" if is_first_turn else text, add_special_tokens=False)
        return [TurnOutput(ids, [0.0] * len(ids), text, "stop") for _ in contexts]

    registry = load_tools([sleep_spec])
    with ToolExecutor(registry, num_workers=workers, timeout_s=60.0) as executor:
        executor.start()
        context = EnvContext(parser=HermesToolParser(), registry=registry, executor=executor)
        loop = AgentLoop(tokenizer, make_env_factory("tool", context), max_turns=2, max_response_tokens=256)
        trajectories = loop.run([[5]] * num_calls, [{}] * num_calls, list(range(num_calls)), generate)
    assert all(t.num_tool_calls == 1 and t.num_tool_errors == 0 for t in trajectories)
    label = f"agent loop turn, {workers:2d} workers (timing_s/tools)"
    print(_line(label, loop.last_timing_s["tools"], num_calls, sleep_s, workers), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-calls", type=int, default=32)
    parser.add_argument("--sleep-s", type=float, default=0.5)
    args = parser.parse_args()
    print(f"{args.num_calls} calls, each sleeping {args.sleep_s} s", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        tool_file = Path(folder, "bench_sleep_tool.py")
        tool_file.write_text(SLEEP_TOOL_SOURCE)
        sleep_spec = f"{tool_file}:sleep_tool"
        bench_function_tools(sleep_spec, args.num_calls, args.sleep_s)
        bench_sandbox(args.num_calls // 2, args.sleep_s)
        bench_agent_loop(sleep_spec, args.num_calls, args.sleep_s, workers=8)
        bench_agent_loop(sleep_spec, args.num_calls, args.sleep_s, workers=32)


if __name__ == "__main__":
    main()
