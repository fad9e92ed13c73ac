"""AgentConfig: the `agent.*` keys of a multi-turn, tool-using rollout, and their checks.

Import-light on purpose (the stdlib and rlhf.schema only), so that rlhf.config can nest it and validate in the driver
within seconds; rlhf.agent.runtime builds the tools, executor and loop from it. Every field carries a docstring and
its domain (`Range`, `Literal`), checked by `rlhf.schema.check_fields` like the rest of the schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, get_args

from rlhf.schema import ConfigError, Range, check_fields

ObservationModeName = Literal["auto", "chat_template", "text"]
NetworkMode = Literal["auto", "namespace", "audit_hook"]
OBSERVATION_MODES = get_args(ObservationModeName)
NETWORK_MODES = get_args(NetworkMode)


@dataclass
class SandboxConfig:
    """Limits of the built-in `python` tool's sandbox (one subprocess per call)."""

    timeout_s: Annotated[float, Range(gt=0)] = 10.0
    """Wall seconds per program; below agent.tool_timeout_s, so the sandbox stops a program before the executor."""
    memory_mb: Annotated[int, Range(ge=64)] = 1024
    """Address-space limit (RLIMIT_AS) of the program, in MiB."""
    max_output_bytes: Annotated[int, Range(ge=1)] = 65536
    """Bytes of stdout + stderr read; past it the program is killed and its output cut."""
    network: NetworkMode = "auto"
    """How the network is cut off: a network namespace, an audit hook refusing sockets, or auto (namespace if possible)."""


@dataclass
class AgentConfig:
    """Multi-turn rollouts: the policy's turns alternate with environment observations (tool results, feedback)."""

    enable: bool = False
    """Generate multi-turn episodes with the agent loop; off: single-turn generation."""
    env: str = "tool"
    """Environment: tool (runs the turn's tool calls), guess_number, or a class spec "pkg.module:Class" / "file.py:Class"."""
    max_turns: Annotated[int, Range(ge=1)] = 4
    """Model turns per episode at most."""
    tools: list[str] = field(default_factory=list)
    """Tools: built-ins (calculator, python) and functions by spec "pkg.module:fn" / "file.py:fn" (typed, documented)."""
    tool_parser: str = "hermes"
    """Reads tool calls from a turn: hermes (<tool_call>{json}</tool_call>) or a parser class spec."""
    stop_at_tool_call: bool = True
    """End a turn at the parser's stop string ("</tool_call>"), so each turn makes one call and sees its result."""
    stop: list[str] = field(default_factory=list)
    """More strings that end a model turn (kept in its text), e.g. a newline for a game played line by line."""
    num_tool_workers: Annotated[int, Range(ge=1)] = 8
    """Worker processes per rollout rank running function tools (how many such calls run at once)."""
    tool_timeout_s: Annotated[float, Range(gt=0)] = 30.0
    """Seconds a tool call may take before it is killed and the model is told it timed out."""
    tool_max_output_chars: Annotated[int, Range(ge=1)] = 8000
    """Longer tool output is cut there, and the call counts as an error."""
    tool_max_concurrency: Annotated[int, Range(ge=1)] = 64
    """Threads per rollout rank driving tool calls (sandbox runs and waits on workers)."""
    max_tool_calls_per_turn: Annotated[int, Range(ge=1)] = 8
    """Calls past this many in one turn are not run; the model is told so."""
    observation_mode: ObservationModeName = "auto"
    """How observations become tokens: the chat template (needs a tool role), a text template, or auto."""
    observation_tool_template: str = "<tool_response>\n{content}\n</tool_response>\n"
    """Text mode: how a tool result is written; {content} is replaced by it."""
    observation_user_template: str = "{content}\n"
    """Text mode: how other environment messages (feedback) are written."""
    env_reward_weight: Annotated[float, Range()] = 1.0
    """Reward = reward.rule_weight x rule score (+ RM) + this x the sum of the environment's per-turn rewards."""
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """The python tool's sandbox."""


def validate_agent_config(cfg: AgentConfig, key: str = "agent") -> None:
    """Check every field's domain and what types cannot express; plugins are resolved by runtime.resolve_plugins.

    Raises:
        ConfigError: the first bad value, naming its key and the value received.
    """
    check_fields(cfg, f"{key}.")
    checks = [
        (
            "python" not in cfg.tools or cfg.sandbox.timeout_s < cfg.tool_timeout_s,
            f"{key}.sandbox.timeout_s={cfg.sandbox.timeout_s} must be below {key}.tool_timeout_s={cfg.tool_timeout_s}, "
            "so the sandbox stops a program before the executor gives up on it",
        ),
        (
            cfg.env != "tool" or not cfg.enable or len(cfg.tools) > 0,
            f"{key}.env='tool' needs at least one tool in {key}.tools (e.g. [calculator])",
        ),
        (all(cfg.stop), f"{key}.stop={cfg.stop!r} holds an empty string, which would end every turn at once"),
    ]
    for template_key in ("observation_tool_template", "observation_user_template"):
        template = getattr(cfg, template_key)
        checks.append(("{content}" in template, f"{key}.{template_key}={template!r} must contain '{{content}}'"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
