"""Environments: ToolEnv runs the calls of a turn; GuessNumberEnv gives feedback and a reward per turn."""

import json
from pathlib import Path

import pytest

from rlhf.agent.env import (
    NUM_TOOL_CALLS,
    NUM_TOOL_ERRORS,
    NUM_TOOL_TIMEOUTS,
    EnvContext,
    GuessNumberEnv,
    ToolEnv,
    make_env_factory,
    row_tool_names,
)
from rlhf.agent.executor import ToolExecutor
from rlhf.agent.parsing import HermesToolParser
from rlhf.agent.tools import load_tools

FNS = str(Path(__file__).with_name("tool_fns.py"))


@pytest.fixture(scope="module")
def context() -> EnvContext:
    registry = load_tools(["calculator", f"{FNS}:check_answer", f"{FNS}:add"])
    with ToolExecutor(registry, num_workers=2, timeout_s=10.0) as executor:
        yield EnvContext(parser=HermesToolParser(), registry=registry, executor=executor, max_calls_per_turn=2)


def _call(name: str, **arguments: object) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def test_tool_env_runs_calls_and_ends_at_a_final_answer(context: EnvContext) -> None:
    env = make_env_factory("tool", context)()
    row = {
        "prompt": [{"role": "user", "content": "Is 2+2 4?"}],
        "tools": ["calculator", "check_answer"],
        "extra_info": {"tools_kwargs": {"check_answer": {"create_kwargs": {"ground_truth": "4"}}}},
    }
    assert env.reset(row) == row["prompt"]
    assert [s["function"]["name"] for s in env.tool_schemas()] == ["calculator", "check_answer"]
    step = env.step("Checking. " + _call("calculator", expression="2+2") + _call("check_answer", answer="4"))
    assert step.observation == [
        {"role": "tool", "name": "calculator", "content": "4"},
        {"role": "tool", "name": "check_answer", "content": "correct"},
    ]
    assert not step.done and step.reward is None
    assert step.info == {NUM_TOOL_CALLS: 2, NUM_TOOL_ERRORS: 0, NUM_TOOL_TIMEOUTS: 0}
    final = env.step("Yes, 4.")
    assert final.done and final.observation is None and final.info[NUM_TOOL_CALLS] == 0


def test_tool_env_counts_bad_calls_and_too_many_calls(context: EnvContext) -> None:
    env = ToolEnv(context)
    env.reset({"prompt": [], "tools": json.dumps([{"type": "function", "function": {"name": "add"}}])})
    text = _call("calculator", expression="1") + "<tool_call>{broken</tool_call>" + _call("add", a=1, b=2) * 2
    step = env.step(text)
    contents = [m["content"] for m in step.observation]
    assert contents[0].startswith("Error: unknown tool 'calculator'; available tools: add")  # row allows only add
    assert contents[1] == "3"
    assert contents[2].startswith("Error: the tool call is not valid JSON")
    assert contents[3] == "Error: at most 2 tool calls run per turn; 1 were skipped"
    assert step.info == {NUM_TOOL_CALLS: 4, NUM_TOOL_ERRORS: 3, NUM_TOOL_TIMEOUTS: 0}


def test_row_tool_names() -> None:
    registry = load_tools(["calculator", f"{FNS}:add"])
    assert row_tool_names({}, registry) is None
    assert row_tool_names({"tools": ["add"]}, registry) == ["add"]
    assert row_tool_names({"tools": '[{"name": "calculator"}]'}, registry) == ["calculator"]
    with pytest.raises(ValueError, match="row column 'tools' names tool 'web'"):
        row_tool_names({"tools": ["web"]}, registry)


def test_guess_number_feedback_and_rewards() -> None:
    env = GuessNumberEnv(EnvContext(parser=HermesToolParser()))
    initial = env.reset({"extra_info": {"target": 37, "low": 1, "high": 50}})
    assert initial == [{"role": "user", "content": "Guess my number from 1 to 50."}]
    steps = [env.step(text) for text in ("I guess 25", "no idea", "40?", "maybe 12 or 37")]
    assert [s.observation for s in steps] == [
        [{"role": "user", "content": "Higher."}],
        [{"role": "user", "content": "Answer with a number."}],
        [{"role": "user", "content": "Lower."}],
        None,
    ]
    assert [s.reward for s in steps] == [0.0, -0.1, 0.0, 1.0]
    assert [s.done for s in steps] == [False, False, False, True]


def test_guess_number_reads_ground_truth_and_needs_a_target() -> None:
    env = GuessNumberEnv(EnvContext(parser=HermesToolParser()))
    env.reset({"reward_model": {"ground_truth": "7"}, "prompt": [{"role": "user", "content": "Guess."}]})
    assert env.step("7").done
    with pytest.raises(ValueError, match="needs extra_info.target or reward_model.ground_truth"):
        env.reset({})


def test_factory_by_name_and_spec_and_errors() -> None:
    context = EnvContext(parser=HermesToolParser())
    assert isinstance(make_env_factory("guess_number", context)(), GuessNumberEnv)
    assert isinstance(make_env_factory("rlhf.agent.env:GuessNumberEnv", context)(), GuessNumberEnv)
    with pytest.raises(ValueError, match="agent.env='chess' is not a known environment"):
        make_env_factory("chess", context)
    with pytest.raises(ValueError, match="agent.env='rlhf.agent.env:StepResult' is not a subclass"):
        make_env_factory("rlhf.agent.env:StepResult", context)
    with pytest.raises(ValueError, match="agent.env='tool' needs at least one tool in agent.tools"):
        make_env_factory("tool", context)
