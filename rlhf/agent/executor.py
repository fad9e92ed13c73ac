"""ToolExecutor: runs tool calls concurrently, each with a deadline and an output cap, never raising for the tool.

Function tools run in killable worker processes (ToolProcessPool); isolated tools (the sandboxed python tool)
already run their own subprocess and are called from a thread. Whatever goes wrong with a call (unknown tool,
arguments that do not fit the schema, an exception, a timeout, a crash, output over the cap) becomes an error text
for the model, flagged on the result so the rollout can count it. Thread-safe: many environments share one.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from rlhf.agent.errors import ToolError
from rlhf.agent.parsing import ToolCall
from rlhf.agent.tool_pool import CallOutcome, ToolProcessPool
from rlhf.agent.tools import Tool, ToolRegistry

logger = logging.getLogger(__name__)


@dataclass
class ToolResult:
    """What the model gets back for one call, and how the call went."""

    name: str
    content: str
    is_error: bool = False
    is_timeout: bool = False
    duration_s: float = 0.0


class ToolExecutor:
    """Executes tool calls from a registry; one instance serves all samples of a rollout."""

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        num_workers: int = 8,
        timeout_s: float = 30.0,
        max_output_chars: int = 8000,
        max_concurrency: int = 64,
    ) -> None:
        """
        Args:
            registry: the tools.
            num_workers: worker processes for function tools (how many such calls run at once).
            timeout_s: seconds one call may run before it is stopped and reported as a timeout.
            max_output_chars: longest output returned to the model; longer output is cut there and flagged.
            max_concurrency: threads driving calls (isolated tools and waits on workers).

        Raises:
            ValueError: a non-positive limit, naming the agent.* key.
        """
        for key, value in (("timeout_s", timeout_s), ("max_output_chars", max_output_chars)):
            if not value > 0:
                raise ValueError(f"agent.tool_{key}={value} must be > 0")
        if max_concurrency < 1:
            raise ValueError(f"agent.tool_max_concurrency={max_concurrency} must be >= 1")
        self.registry = registry
        self.timeout_s = timeout_s
        self.max_output_chars = max_output_chars
        self._pool = ToolProcessPool(num_workers)
        self._threads = concurrent.futures.ThreadPoolExecutor(max_concurrency, thread_name_prefix="tool-call")
        # Isolated calls get their own threads: one that outlives its deadline must not hold a driving thread.
        self._isolated = concurrent.futures.ThreadPoolExecutor(max_concurrency, thread_name_prefix="tool-isolated")

    def start(self) -> None:
        """Start the worker processes and load every function tool in them now (else the first calls do).

        Raises:
            RuntimeError: a worker could not load a tool.
        """
        specs = [tool.spec for tool in self.registry if not tool.is_isolated and tool.spec is not None]
        if specs:
            self._pool.start(specs)

    def close(self) -> None:
        """Stop worker processes and threads."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._isolated.shutdown(wait=False, cancel_futures=True)
        self._pool.close()

    def __enter__(self) -> ToolExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        calls: Sequence[ToolCall],
        allowed: Collection[str] | None = None,
        tools_kwargs: dict[str, Any] | None = None,
    ) -> list[ToolResult]:
        """Execute calls concurrently and return one result per call, in order.

        Args:
            calls: the calls, possibly from many samples.
            allowed: names this sample may call (the row's `tools` column); None allows every registered tool.
            tools_kwargs: the row's `extra_info.tools_kwargs`: {tool name: {"create_kwargs": {...},
                "execute_kwargs": {...}}}; their union fills the tool's hidden (keyword-only) parameters.
        """
        futures = [self._threads.submit(self.execute, call, allowed, tools_kwargs) for call in calls]
        return [f.result() for f in futures]

    def execute(
        self, call: ToolCall, allowed: Collection[str] | None = None, tools_kwargs: dict[str, Any] | None = None
    ) -> ToolResult:
        """Execute one call (blocking; thread-safe). Arguments as for run()."""
        start = time.monotonic()
        tool = self.registry.get(call.name)
        if tool is None or (allowed is not None and call.name not in allowed):
            names = [n for n in self.registry.names if allowed is None or n in allowed]
            result = self._error(call.name, f"Error: unknown tool {call.name!r}; available tools: {', '.join(names)}")
        else:
            hidden = _hidden_kwargs(tool, (tools_kwargs or {}).get(call.name))
            problem = tool.check_arguments(call.arguments, hidden)
            if problem is not None:
                result = self._error(call.name, problem)
            else:
                result = self._call(tool, {**call.arguments, **hidden})
        result.duration_s = time.monotonic() - start
        return result

    def _call(self, tool: Tool, kwargs: dict[str, Any]) -> ToolResult:
        if tool.is_isolated:
            outcome = self._call_isolated(tool, kwargs)
        else:
            assert tool.spec is not None, f"tool {tool.name!r} runs in a worker and needs a spec"
            outcome = self._pool.call(tool.spec, kwargs, self.timeout_s, self.max_output_chars)
        return self._to_result(tool.name, outcome)

    def _call_isolated(self, tool: Tool, kwargs: dict[str, Any]) -> CallOutcome:
        future = self._isolated.submit(tool.fn, **kwargs)
        try:
            value = future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            return CallOutcome(status="timeout", text="")  # its subprocess ends at its own limit
        except ToolError as e:
            return CallOutcome(status="raised", text=e.message, is_tool_error=True, is_tool_timeout=e.is_timeout)
        except Exception as e:
            return CallOutcome(status="raised", text=f"{type(e).__name__}: {e}")
        text = value if isinstance(value, str) else str(value)
        return CallOutcome(status="ok", text=text[: self.max_output_chars + 1], num_chars=len(text))

    def _to_result(self, name: str, outcome: CallOutcome) -> ToolResult:
        cap = self.max_output_chars
        if outcome.status == "timeout":
            return self._error(name, f"Error: tool {name!r} did not finish within {self.timeout_s:g} s", timeout=True)
        if outcome.status == "crashed":
            return self._error(name, f"Error: tool {name!r} crashed (its process exited with code {outcome.exit_code})")
        if outcome.status == "raised":
            text = outcome.text if outcome.is_tool_error else f"Error: tool {name!r} raised {outcome.text}"
            return self._error(name, _cut(text, cap), timeout=outcome.is_tool_timeout)
        if outcome.num_chars > cap:
            head = f"Error: the output of tool {name!r} has {outcome.num_chars} characters, over the limit of {cap}"
            return self._error(name, f"{head}; its first {cap} characters:\n{outcome.text[:cap]}")
        return ToolResult(name=name, content=outcome.text)

    @staticmethod
    def _error(name: str, text: str, timeout: bool = False) -> ToolResult:
        return ToolResult(name=name, content=text, is_error=True, is_timeout=timeout)


def _hidden_kwargs(tool: Tool, row_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The tool's hidden parameters from the row's tools_kwargs entry (create_kwargs, then execute_kwargs)."""
    if not row_kwargs or not tool.hidden_params:
        return {}
    merged = {**(row_kwargs.get("create_kwargs") or {}), **(row_kwargs.get("execute_kwargs") or {})}
    return {k: v for k, v in merged.items() if k in tool.hidden_params}


def _cut(text: str, cap: int) -> str:
    return text if len(text) <= cap else text[:cap] + f"\n[... cut at {cap} characters]"
