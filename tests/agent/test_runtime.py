"""agent.* config checks, building the runtime from config, and packing trajectories into the trainer's Batch."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from ascii_tokenizer import build_ascii_tokenizer

from rlhf.agent.config import AgentConfig, SandboxConfig, validate_agent_config
from rlhf.agent.loop import Trajectory
from rlhf.agent.runtime import build_agent, trajectories_to_batch
from rlhf.models.tiny import build_tokenizer

FNS = str(Path(__file__).with_name("tool_fns.py"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(max_turns=0), "agent.max_turns=0 must be >= 1"),
        (dict(observation_mode="xml"), "agent.observation_mode='xml' is not valid; choose from"),
        (dict(observation_tool_template="<r/>"), "agent.observation_tool_template='<r/>' must contain"),
        (dict(sandbox=SandboxConfig(network="off")), "agent.sandbox.network='off' is not valid; choose from"),
        (dict(sandbox=SandboxConfig(memory_mb=10)), "agent.sandbox.memory_mb=10 must be >= 64"),
        (dict(tool_timeout_s=0.0), "agent.tool_timeout_s=0.0 must be > 0"),
        (dict(stop=["\n", ""]), "agent.stop=.* holds an empty string"),
        (dict(tools=["python"], sandbox=SandboxConfig(timeout_s=40.0)), "agent.sandbox.timeout_s=40.0 must be below"),
        (dict(enable=True, tools=[]), "agent.env='tool' needs at least one tool in agent.tools"),
    ],
)
def test_validation_names_the_key(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_agent_config(replace(AgentConfig(tools=["calculator"]), **change))


def test_bad_plugins_fail_at_build_naming_the_key() -> None:
    tokenizer = build_tokenizer()
    with pytest.raises(ValueError, match=r"agent.tools\[1\]='/missing/tools.py:fn': file /missing/tools.py does not"):
        build_agent(AgentConfig(tools=["calculator", "/missing/tools.py:fn"]), tokenizer, 64, start_workers=False)
    with pytest.raises(ValueError, match=r"agent.tools\[0\]: tool 'no_docstring' needs type hints"):
        build_agent(AgentConfig(tools=[f"{FNS}:no_docstring"]), tokenizer, 64, start_workers=False)
    with pytest.raises(ValueError, match="agent.tool_parser='mistral' is not a known tool parser"):
        build_agent(AgentConfig(tools=["calculator"], tool_parser="mistral"), tokenizer, 64, start_workers=False)
    with pytest.raises(ValueError, match="agent.env='/no/env.py:Env': file /no/env.py does not exist"):
        build_agent(AgentConfig(tools=["calculator"], env="/no/env.py:Env"), tokenizer, 64, start_workers=False)


def test_build_from_config() -> None:
    runtime = build_agent(AgentConfig(tools=["calculator", f"{FNS}:add"]), build_ascii_tokenizer(), 128)
    try:
        assert runtime.registry.names == ["calculator", "add"]
        assert runtime.loop.stop == ("</tool_call>",) and runtime.loop.max_response_tokens == 128
        assert runtime.loop.formatter.uses_chat_template  # the ASCII test template has a tool role
        env = runtime.loop.env_factory()
        env.reset({})
        step = env.step('<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>')
        assert step.observation == [{"role": "tool", "name": "add", "content": "5"}]
    finally:
        runtime.close()
    game = build_agent(AgentConfig(env="guess_number", stop_at_tool_call=False), build_tokenizer(), 64)
    assert game.executor is None and game.loop.stop == () and not game.loop.formatter.uses_chat_template


def test_trajectories_to_batch() -> None:
    a = Trajectory(prompt_ids=[7, 8], response_ids=[1, 2, 3, 4], loss_mask=[1, 0, 0, 1])
    a.rollout_log_probs = [-0.5, 0.0, 0.0, -0.25]
    a.turn_texts, a.turn_rewards, a.num_turns, a.finish_reason = ["x", "y"], [0.0, 1.0], 2, "answer"
    b = Trajectory(prompt_ids=[9], response_ids=[5], loss_mask=[1], rollout_log_probs=[-1.0], turn_texts=["z"])
    batch = trajectories_to_batch([a, b], max_prompt_length=3, max_response_length=5, pad_token_id=0)
    assert batch["responses"].tolist() == [[1, 2, 3, 4, 0], [5, 0, 0, 0, 0]]
    assert batch["response_mask"].tolist() == [[1, 0, 0, 1, 0], [1, 0, 0, 0, 0]]
    assert batch["response_mask"].dtype == torch.float32
    # observation tokens are attended to: only padding is masked out of attention
    assert batch["attention_mask"].tolist() == [[0, 1, 1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0, 0, 0]]
    assert batch["rollout_log_probs"].tolist() == [[-0.5, 0.0, 0.0, -0.25, 0.0], [-1.0, 0.0, 0.0, 0.0, 0.0]]
    assert batch.non_tensors["final_text"] == ["y", "z"] and batch.non_tensors["env_reward"] == [1.0, 0.0]
    assert batch.non_tensors["num_turns"] == [2, 0] and batch.non_tensors["finish_reason"] == ["answer", "answer"]
