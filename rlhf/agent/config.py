"""AgentConfig: the `agent.*` keys of a multi-turn, tool-using rollout, and their checks.

Import-light on purpose (stdlib only), so that rlhf.config can nest it and validate in the driver within seconds;
rlhf.agent.runtime builds the tools, executor and loop from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OBSERVATION_MODES = ("auto", "chat_template", "text")
NETWORK_MODES = ("auto", "namespace", "audit_hook")


@dataclass
class SandboxConfig:
    """Limits of the built-in `python` tool's sandbox (one subprocess per call)."""

    timeout_s: float = 10.0  # wall seconds per program; keep below agent.tool_timeout_s so the sandbox stops first
    memory_mb: int = 1024  # address-space limit (RLIMIT_AS) of the program
    max_output_bytes: int = 65536  # stdout + stderr read; past it the program is killed and the output cut
    network: str = "auto"  # auto | namespace | audit_hook (auto: a network namespace where possible)


@dataclass
class AgentConfig:
    """Multi-turn rollouts: the policy's turns alternate with environment observations (tool results, feedback)."""

    enable: bool = False  # off: single-turn generation as before
    env: str = "tool"  # tool | guess_number | "pkg.module:Class" / "/path/file.py:Class" (an rlhf.agent.env.Env)
    max_turns: int = 4  # model turns per episode at most
    tools: list[str] = field(default_factory=list)  # built-ins ("calculator", "python") and function specs
    tool_parser: str = "hermes"  # hermes (<tool_call>{json}</tool_call>) or a parser class spec
    stop_at_tool_call: bool = True  # end a turn at the parser's stop string ("</tool_call>"): one call per turn
    num_tool_workers: int = 8  # worker processes running function tools (calls running at once)
    tool_timeout_s: float = 30.0  # seconds a call may take before it is killed and reported as a timeout
    tool_max_output_chars: int = 8000  # longer tool output is cut there and counted as an error
    tool_max_concurrency: int = 64  # threads driving calls (sandbox runs and waits on workers)
    max_tool_calls_per_turn: int = 8  # calls past this in one turn are skipped with a message
    observation_mode: str = "auto"  # auto | chat_template (needs a tool role) | text
    observation_tool_template: str = "<tool_response>\n{content}\n</tool_response>\n"  # text mode, tool messages
    observation_user_template: str = "{content}\n"  # text mode, other messages (environment feedback)
    env_reward_weight: float = 1.0  # score = rule/RM score + this x the sum of the environment's per-turn rewards
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)


def validate_agent_config(cfg: AgentConfig, key: str = "agent") -> None:
    """Check what types cannot express; plugin files are checked when runtime.build_agent loads them.

    Raises:
        ValueError: the first bad value, naming its key and the value received.
    """
    checks = [
        (cfg.max_turns >= 1, f"{key}.max_turns={cfg.max_turns} must be >= 1"),
        (cfg.num_tool_workers >= 1, f"{key}.num_tool_workers={cfg.num_tool_workers} must be >= 1"),
        (cfg.tool_timeout_s > 0, f"{key}.tool_timeout_s={cfg.tool_timeout_s} must be > 0"),
        (cfg.tool_max_output_chars > 0, f"{key}.tool_max_output_chars={cfg.tool_max_output_chars} must be > 0"),
        (cfg.tool_max_concurrency >= 1, f"{key}.tool_max_concurrency={cfg.tool_max_concurrency} must be >= 1"),
        (cfg.max_tool_calls_per_turn >= 1, f"{key}.max_tool_calls_per_turn={cfg.max_tool_calls_per_turn} must be >= 1"),
        (
            cfg.observation_mode in OBSERVATION_MODES,
            f"{key}.observation_mode={cfg.observation_mode!r} must be one of {list(OBSERVATION_MODES)}",
        ),
        (
            cfg.sandbox.network in NETWORK_MODES,
            f"{key}.sandbox.network={cfg.sandbox.network!r} must be one of {list(NETWORK_MODES)}",
        ),
        (cfg.sandbox.timeout_s > 0, f"{key}.sandbox.timeout_s={cfg.sandbox.timeout_s} must be > 0"),
        (cfg.sandbox.memory_mb >= 64, f"{key}.sandbox.memory_mb={cfg.sandbox.memory_mb} must be >= 64"),
        (
            cfg.sandbox.max_output_bytes > 0,
            f"{key}.sandbox.max_output_bytes={cfg.sandbox.max_output_bytes} must be > 0",
        ),
        (
            "python" not in cfg.tools or cfg.sandbox.timeout_s < cfg.tool_timeout_s,
            f"{key}.sandbox.timeout_s={cfg.sandbox.timeout_s} must be below {key}.tool_timeout_s={cfg.tool_timeout_s}, "
            "so the sandbox stops a program before the executor gives up on it",
        ),
        (
            cfg.env != "tool" or not cfg.enable or len(cfg.tools) > 0,
            f"{key}.env='tool' needs at least one tool in {key}.tools (e.g. [calculator])",
        ),
    ]
    for template_key in ("observation_tool_template", "observation_user_template"):
        template = getattr(cfg, template_key)
        checks.append(("{content}" in template, f"{key}.{template_key}={template!r} must contain '{{content}}'"))
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
