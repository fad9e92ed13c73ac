"""Multi-turn environments (gym-like): reset with a data row, then one step per model turn.

A step returns the observation to append (tool responses, feedback), an optional reward for the turn, and whether
the episode is over. Built-ins, chosen by `agent.env`: "tool" (the default: run the tool calls in the turn) and
"guess_number" (a game with higher/lower feedback and a reward per turn). A user environment is a class named by
spec ("package.module:Class" or "/path/file.py:Class") constructed with the EnvContext.
"""

from __future__ import annotations

import functools
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlhf.agent.executor import ToolExecutor
from rlhf.agent.parsing import ToolParser
from rlhf.agent.tools import ToolRegistry
from rlhf.plugins import load_object

Messages = list[dict[str, str]]
Observation = str | Messages
"""A list of chat messages (role "tool" or "user"), or a string: the content of one tool message."""

# StepResult.info keys the rollout sums into its tool metrics.
NUM_TOOL_CALLS, NUM_TOOL_ERRORS, NUM_TOOL_TIMEOUTS = "num_tool_calls", "num_tool_errors", "num_tool_timeouts"


@dataclass
class StepResult:
    """What the environment answers to one model turn."""

    observation: Observation | None
    """Appended to the conversation (as loss-masked tokens) before the next turn; None: nothing to append."""
    reward: float | None = None
    """This turn's reward, if the environment gives one."""
    done: bool = False
    """The episode is over (the turn was the final answer)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Counters such as NUM_TOOL_CALLS / NUM_TOOL_ERRORS / NUM_TOOL_TIMEOUTS, and anything else to log."""


@dataclass(frozen=True)
class EnvContext:
    """What every environment of a rollout shares."""

    parser: ToolParser
    registry: ToolRegistry = field(default_factory=ToolRegistry)
    executor: ToolExecutor | None = None
    """None when the run has no tools."""
    max_calls_per_turn: int = 8
    """Tool calls past this many in one turn are not run; the model is told so."""


class Env(ABC):
    """One episode per data row; an instance serves one sample, and its step() may run in a worker thread."""

    def __init__(self, context: EnvContext) -> None:
        self.context = context

    @abstractmethod
    def reset(self, sample: dict[str, Any]) -> Observation:
        """Start an episode for a data row; returns its initial messages (or user text)."""

    @abstractmethod
    def step(self, model_turn_text: str) -> StepResult:
        """React to the model's turn (its decoded text)."""

    def tool_schemas(self) -> list[dict[str, Any]]:
        """Schemas of the tools this episode offers, for a chat template's `tools=`; none by default."""
        return []

    def close(self) -> None:  # noqa: B027 (optional hook: most environments hold nothing)
        """Release what the episode holds."""


def row_tool_names(sample: dict[str, Any], registry: ToolRegistry) -> list[str] | None:
    """The tools a row may call, from its `tools` column (names, schemas, or their JSON); None: every tool.

    Raises:
        ValueError: the column names a tool that is not registered, or is not a list.
    """
    tools = sample.get("tools")
    if tools is None:
        return None
    if isinstance(tools, str):
        tools = json.loads(tools)
    if not isinstance(tools, list):
        raise ValueError(f"row column 'tools' must be a list of tool names or schemas, got {tools!r:.200}")
    names = []
    for item in tools:
        name = item if isinstance(item, str) else (item.get("function") or item).get("name")
        if name not in registry:
            raise ValueError(f"row column 'tools' names tool {name!r}, not one of agent.tools {registry.names}")
        names.append(name)
    return names


def row_tool_schemas(sample: dict[str, Any], registry: ToolRegistry) -> list[dict[str, Any]] | None:
    """The schemas of the tools a row offers (its `tools` column, else every tool), for the prompt's chat template;
    None when the run has no tools.

    Raises:
        ValueError: as row_tool_names.
    """
    if len(registry) == 0:
        return None
    return registry.schemas(row_tool_names(sample, registry))


class ToolEnv(Env):
    """Runs the tool calls of each turn; the episode ends at a turn with no tool call (the final answer)."""

    def reset(self, sample: dict[str, Any]) -> Observation:
        self.allowed = row_tool_names(sample, self.context.registry)
        self.tools_kwargs = (sample.get("extra_info") or {}).get("tools_kwargs") or {}
        return sample.get("prompt") or []

    def tool_schemas(self) -> list[dict[str, Any]]:
        return self.context.registry.schemas(self.allowed)

    def step(self, model_turn_text: str) -> StepResult:
        parsed = self.context.parser.parse(model_turn_text)
        if parsed.is_final:
            return StepResult(observation=None, done=True, info={NUM_TOOL_CALLS: 0, NUM_TOOL_ERRORS: 0})
        limit = self.context.max_calls_per_turn
        calls, errors = parsed.calls[:limit], list(parsed.errors)
        if len(parsed.calls) > limit:
            errors.append(f"Error: at most {limit} tool calls run per turn; {len(parsed.calls) - limit} were skipped")
        if self.context.executor is None:
            raise RuntimeError("agent.env='tool' needs tools: set agent.tools")
        results = self.context.executor.run(calls, self.allowed, self.tools_kwargs)
        messages = [{"role": "tool", "name": r.name, "content": r.content} for r in results]
        messages += [{"role": "tool", "content": e} for e in errors]
        info = {
            NUM_TOOL_CALLS: len(calls) + len(errors),
            NUM_TOOL_ERRORS: sum(r.is_error for r in results) + len(errors),
            NUM_TOOL_TIMEOUTS: sum(r.is_timeout for r in results),
        }
        return StepResult(observation=messages, done=False, info=info)


class GuessNumberEnv(Env):
    """Guess a hidden integer; each wrong guess hears "higher" or "lower".

    The target is `extra_info.target` (else `reward_model.ground_truth`), the range `extra_info.low`/`high`
    (1..100). Rewards per turn: CORRECT_REWARD for the right number (episode over), 0.0 for a wrong guess,
    INVALID_REWARD for a turn with no integer in it. The guess is the last integer in the turn.
    """

    CORRECT_REWARD, INVALID_REWARD = 1.0, -0.1

    def reset(self, sample: dict[str, Any]) -> Observation:
        extra = sample.get("extra_info") or {}
        target = extra.get("target", (sample.get("reward_model") or {}).get("ground_truth"))
        if target is None:
            raise ValueError("agent.env='guess_number' needs extra_info.target or reward_model.ground_truth per row")
        self.target, self.low, self.high = int(target), int(extra.get("low", 1)), int(extra.get("high", 100))
        default = [{"role": "user", "content": f"Guess my number from {self.low} to {self.high}."}]
        return sample.get("prompt") or default

    def step(self, model_turn_text: str) -> StepResult:
        numbers = re.findall(r"-?\d+", model_turn_text)
        if not numbers:
            return StepResult(
                observation=[{"role": "user", "content": "Answer with a number."}], reward=self.INVALID_REWARD
            )
        guess = int(numbers[-1])
        if guess == self.target:
            return StepResult(observation=None, reward=self.CORRECT_REWARD, done=True, info={"guess": guess})
        hint = "Higher." if guess < self.target else "Lower."
        return StepResult(observation=[{"role": "user", "content": hint}], reward=0.0, info={"guess": guess})


ENVS: dict[str, type[Env]] = {"tool": ToolEnv, "guess_number": GuessNumberEnv}


def env_class(name: str, key: str = "agent.env") -> type[Env]:
    """The environment class for a registered name or a class spec.

    Raises:
        ValueError: an unknown name, a spec that does not load, or not an Env subclass; the message names `key`.
    """
    if name in ENVS:
        return ENVS[name]
    if ":" not in name:
        raise ValueError(f"{key}={name!r} is not a known environment; choose one of {sorted(ENVS)} or a class spec")
    cls = load_object(name, key)
    if not (isinstance(cls, type) and issubclass(cls, Env)):
        raise ValueError(f"{key}={name!r} is not a subclass of rlhf.agent.env.Env")
    return cls


def make_env_factory(name: str, context: EnvContext, key: str = "agent.env") -> Callable[[], Env]:
    """A factory of fresh environments (one per sample) by registered name or class spec.

    Raises:
        ValueError: as env_class, or "tool" without tools.
    """
    cls = env_class(name, key)
    if cls is ToolEnv and (context.executor is None or len(context.registry) == 0):
        raise ValueError(f"{key}='tool' needs at least one tool in agent.tools")
    return functools.partial(cls, context)
