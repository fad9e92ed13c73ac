"""Building an agent rollout from `agent.*` config, and packing its trajectories into the trainer's Batch layout.

The rollout worker calls `build_agent` once at start-up (a bad tool file, parser or environment fails there, naming
its key), then `runtime.loop.run(...)` per step and `trajectories_to_batch` on the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlhf.agent.config import AgentConfig, validate_agent_config
from rlhf.agent.env import EnvContext, env_class, make_env_factory
from rlhf.agent.executor import ToolExecutor
from rlhf.agent.loop import AgentLoop, Trajectory
from rlhf.agent.observation import ObservationFormatter
from rlhf.agent.parsing import ToolParser, make_tool_parser
from rlhf.agent.sandbox import SandboxLimits
from rlhf.agent.tools import ToolRegistry, load_tools
from rlhf.batch import Batch
from rlhf.sequences import assemble, right_pad


@dataclass
class AgentRuntime:
    """What one rollout worker holds for agentic generation."""

    loop: AgentLoop
    registry: ToolRegistry
    parser: ToolParser
    executor: ToolExecutor | None

    def close(self) -> None:
        """Stop the tool worker processes."""
        if self.executor is not None:
            self.executor.close()


def resolve_plugins(cfg: AgentConfig) -> tuple[ToolRegistry, ToolParser]:
    """Check the agent config and load what it names (tools, parser, environment class), without starting anything.

    The driver calls this at start-up so a bad plugin fails in seconds, before any worker starts.

    Returns:
        The tools and the parser.

    Raises:
        ValueError: a bad agent.* value, a tool file that does not exist, a tool without docstring or type hints,
            duplicate tool names, an unknown parser or environment; the message names the key (agent.tools[i], ...).
    """
    validate_agent_config(cfg)
    registry = load_tools(cfg.tools, key="agent.tools", sandbox_limits=sandbox_limits(cfg))
    parser = make_tool_parser(cfg.tool_parser, key="agent.tool_parser")
    env_class(cfg.env, key="agent.env")
    return registry, parser


def sandbox_limits(cfg: AgentConfig) -> SandboxLimits:
    """The python tool's limits from agent.sandbox.*."""
    s = cfg.sandbox
    return SandboxLimits(
        timeout_s=s.timeout_s, memory_mb=s.memory_mb, max_output_bytes=s.max_output_bytes, network=s.network
    )


def build_agent(cfg: AgentConfig, tokenizer: Any, max_response_tokens: int, start_workers: bool = True) -> AgentRuntime:
    """Load tools, parser and environment named in cfg and build the loop.

    Args:
        cfg: the `agent` config.
        tokenizer: the policy's tokenizer (observations are tokenised with it).
        max_response_tokens: `rollout.max_response_length`: model plus observation tokens per episode.
        start_workers: start the tool worker processes now (else on the first call).

    Raises:
        ValueError: as resolve_plugins.
    """
    registry, parser = resolve_plugins(cfg)
    executor = None
    if len(registry) > 0:
        executor = ToolExecutor(
            registry,
            num_workers=cfg.num_tool_workers,
            timeout_s=cfg.tool_timeout_s,
            max_output_chars=cfg.tool_max_output_chars,
            max_concurrency=cfg.tool_max_concurrency,
        )
    context = EnvContext(parser, registry, executor, cfg.max_tool_calls_per_turn)
    formatter = ObservationFormatter(
        tokenizer,
        mode=cfg.observation_mode,
        tool_template=cfg.observation_tool_template,
        user_template=cfg.observation_user_template,
    )
    stop = (*(parser.stop_strings if cfg.stop_at_tool_call else ()), *cfg.stop)
    loop = AgentLoop(
        tokenizer,
        make_env_factory(cfg.env, context, key="agent.env"),
        max_turns=cfg.max_turns,
        max_response_tokens=max_response_tokens,
        observation_formatter=formatter,
        stop=tuple(dict.fromkeys(stop)),
        max_step_threads=cfg.tool_max_concurrency,
    )
    runtime = AgentRuntime(loop=loop, registry=registry, parser=parser, executor=executor)
    if start_workers and executor is not None:
        executor.start()
    return runtime


def trajectories_to_batch(
    trajectories: list[Trajectory], max_prompt_length: int, max_response_length: int, pad_token_id: int
) -> Batch:
    """The trainer's layout (rlhf.sequences.assemble) with the agent's masks and log-probs.

    Observation tokens are attended to (attention_mask 1) but never trained on (response_mask 0).

    Returns:
        Batch with prompts [B, P], responses / response_mask / rollout_log_probs [B, R], input_ids /
        attention_mask / position_ids [B, P+R]; non_tensors response_text, final_text (the last model turn),
        env_reward, num_turns, finish_reason.
    """
    batch = assemble(
        [t.prompt_ids for t in trajectories],
        [t.response_ids for t in trajectories],
        max_prompt_length,
        max_response_length,
        pad_token_id,
    )
    batch["response_mask"] = right_pad([t.loss_mask for t in trajectories], max_response_length, 0.0, torch.float32)
    batch["rollout_log_probs"] = right_pad(
        [t.rollout_log_probs for t in trajectories], max_response_length, 0.0, torch.float32
    )
    batch.non_tensors.update(
        {
            "response_text": [t.response_text for t in trajectories],
            "final_text": [t.final_text for t in trajectories],
            "env_reward": [t.env_reward for t in trajectories],
            "num_turns": [t.num_turns for t in trajectories],
            "finish_reason": [t.finish_reason for t in trajectories],
        }
    )
    return batch
