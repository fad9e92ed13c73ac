"""The agent loop against a scripted engine: batching per turn, token-in/token-out, masks, limits and metrics."""

import json
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from ascii_tokenizer import build_ascii_tokenizer

from rlhf.agent.env import Env, EnvContext, StepResult, make_env_factory
from rlhf.agent.executor import ToolExecutor
from rlhf.agent.loop import AgentLoop, SamplingRequest, Trajectory, TurnOutput, agent_metrics
from rlhf.agent.observation import ObservationFormatter
from rlhf.agent.parsing import HermesToolParser
from rlhf.agent.tools import load_tools
from rlhf.models.tiny import build_tokenizer

FNS = str(Path(__file__).with_name("tool_fns.py"))
STRIDE = 1_000_003  # the loop's per-turn seed stride


class ScriptedEngine:
    """A stand-in for vLLM: each sample (found by its prompt) plays its scripted turn texts in order.

    Log-probs are -(position + 1) / 100 within each turn, so every token's value is known.
    """

    def __init__(self, tokenizer: Any, scripts: dict[tuple[int, ...], list[str]]) -> None:
        self.tokenizer, self.scripts = tokenizer, scripts
        self.turns: dict[tuple[int, ...], int] = defaultdict(int)
        self.calls: list[tuple[list[list[int]], list[SamplingRequest]]] = []
        self.outputs: dict[tuple[int, ...], list[TurnOutput]] = defaultdict(list)

    def __call__(self, contexts: list[list[int]], requests: list[SamplingRequest]) -> list[TurnOutput]:
        self.calls.append(([list(c) for c in contexts], list(requests)))
        outputs = []
        for context, request in zip(contexts, requests, strict=True):
            prompt = next(p for p in self.scripts if tuple(context[: len(p)]) == p)
            text = self.scripts[prompt][self.turns[prompt]]
            self.turns[prompt] += 1
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            finish = "length" if len(ids) > request.max_tokens else "stop"
            ids = ids[: request.max_tokens]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            output = TurnOutput(ids, [-(k + 1) / 100 for k in range(len(ids))], text, finish)
            self.outputs[prompt].append(output)
            outputs.append(output)
        return outputs


def _encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def _call(name: str, **arguments: object) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


@pytest.fixture(scope="module")
def tool_context() -> EnvContext:
    registry = load_tools(["calculator", f"{FNS}:add"])
    with ToolExecutor(registry, num_workers=2, timeout_s=10.0) as executor:
        yield EnvContext(parser=HermesToolParser(), registry=registry, executor=executor)


def _check_segments(trajectory: Trajectory, pieces: list[tuple[list[int], bool, list[float] | None]]) -> None:
    """The response is exactly these pieces, in order, with their masks and log-probs."""
    ids, mask, log_probs = [], [], []
    for piece, is_model, piece_log_probs in pieces:
        ids += piece
        mask += [int(is_model)] * len(piece)
        log_probs += piece_log_probs if is_model else [0.0] * len(piece)
    assert trajectory.response_ids == ids
    assert trajectory.loss_mask == mask
    assert trajectory.rollout_log_probs == pytest.approx(log_probs)


def test_tool_episodes_token_in_token_out(tool_context: EnvContext) -> None:
    tok = build_ascii_tokenizer()
    prompts = [_encode(tok, f"<|im_start|>user\nQ{i}<|im_end|>\n<|im_start|>assistant\n") for i in range(3)]
    scripts = {
        tuple(prompts[0]): ["Let me compute." + _call("calculator", expression="6*7"), "It is 42.<|im_end|>"],
        tuple(prompts[1]): ["I know: 5.<|im_end|>"],
        tuple(prompts[2]): [_call("add", a=1) + "<|im_end|>", _call("web_search", query="x")],
    }
    engine = ScriptedEngine(tok, scripts)
    loop = AgentLoop(
        tok, make_env_factory("tool", tool_context), max_turns=2, max_response_tokens=400, stop=("</tool_call>",)
    )
    trajectories = loop.run(prompts, [{}, {}, {}], [10, 20, 30], engine)

    # 1. one batched generate call per turn, with only the active samples in turn 2
    assert len(engine.calls) == 2
    (contexts1, requests1), (contexts2, requests2) = engine.calls
    assert contexts1 == prompts
    assert [r.seed for r in requests1] == [10, 20, 30] and [r.seed for r in requests2] == [10 + STRIDE, 30 + STRIDE]
    assert all(r.stop == ("</tool_call>",) and r.max_tokens == 400 for r in requests1)
    a, b, c = trajectories

    # 2. token-out: model tokens as generated, observations tokenised once from the chat template
    (a1, a2), (b1,), (c1, c2) = (engine.outputs[tuple(p)] for p in prompts)
    a_obs = _encode(
        tok, "<|im_end|>\n<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    _check_segments(a, [(a1.token_ids, True, a1.log_probs), (a_obs, False, None), (a2.token_ids, True, a2.log_probs)])
    _check_segments(b, [(b1.token_ids, True, b1.log_probs)])
    c_error = "Error: invalid arguments for tool 'add': 'b' is a required property"
    # c's first turn ended with <|im_end|> (eos): the template's copy of it is not repeated
    c_obs = _encode(
        tok, f"\n<|im_start|>user\n<tool_response>\n{c_error}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    # the last turn hit max_turns: its observation is never appended
    _check_segments(c, [(c1.token_ids, True, c1.log_probs), (c_obs, False, None), (c2.token_ids, True, c2.log_probs)])

    # 3. token-in: turn 2 continues from exactly the prompt and the ids so far, and asks for the budget left
    assert contexts2 == [prompts[0] + a1.token_ids + a_obs, prompts[2] + c1.token_ids + c_obs]
    assert [r.max_tokens for r in requests2] == [400 - len(a1.token_ids + a_obs), 400 - len(c1.token_ids + c_obs)]
    assert [t.finish_reason for t in trajectories] == ["answer", "answer", "max_turns"]
    assert [t.num_turns for t in trajectories] == [2, 1, 2]
    assert [(t.num_tool_calls, t.num_tool_errors, t.num_tool_timeouts) for t in trajectories] == [
        (1, 0, 0),
        (0, 0, 0),
        (2, 2, 0),
    ]
    assert a.final_text == "It is 42." and b.final_text == "I know: 5."
    assert a.response_text == tok.decode(a.response_ids, skip_special_tokens=True)
    assert "<tool_response>\n42\n</tool_response>" in a.response_text
    assert a.turn_rewards == [None, None] and a.env_reward == 0.0

    metrics = agent_metrics(trajectories, loop.last_timing_s)
    expected = {
        "agent/num_turns/mean": 5 / 3,
        "agent/num_turns/max": 2.0,
        "agent/tool_calls/mean": 1.0,
        "agent/tool_errors": 2.0,
        "agent/tool_timeouts": 0.0,
        "agent/env_reward/mean": 0.0,
        "agent/finish/answer": 2 / 3,
        "agent/finish/max_turns": 1 / 3,
        "agent/finish/length": 0.0,
    }
    assert {k: v for k, v in metrics.items() if k != "timing_s/tools"} == pytest.approx(expected)
    assert metrics["timing_s/tools"] == loop.last_timing_s["tools"] > 0.0


def test_response_never_exceeds_the_limit(tool_context: EnvContext) -> None:
    tok = build_ascii_tokenizer()
    prompts = [_encode(tok, "P0:"), _encode(tok, "P1:"), _encode(tok, "P2:")]
    long_call, short_call = _call("calculator", expression="2**200"), _call("calculator", expression="2**60")
    scripts = {
        tuple(prompts[0]): [long_call],  # its 61-digit observation does not fit: cut
        tuple(prompts[1]): [short_call + "x" * 100],  # the turn itself runs past the budget: cut, tool not run
        tuple(prompts[2]): [short_call, "y" * 100],  # the observation fits; the second turn is cut
    }
    budget = len(_encode(tok, short_call)) + 30
    engine = ScriptedEngine(tok, scripts)
    formatter = ObservationFormatter(tok, mode="text", tool_template="{content}\n")
    env_factory = make_env_factory("tool", tool_context)
    loop = AgentLoop(tok, env_factory, max_turns=3, max_response_tokens=budget, observation_formatter=formatter)
    a, b, c = loop.run(prompts, [{}, {}, {}], [0, 1, 2], engine)
    assert all(len(t.response_ids) == len(t.loss_mask) == len(t.rollout_log_probs) == budget for t in (a, b, c))
    assert [t.finish_reason for t in (a, b, c)] == ["length", "length", "length"]
    # a: the whole call, then its observation cut to the 29 tokens left
    assert tok.decode(a.response_ids[-29:]) == str(2**200)[:29]
    assert a.loss_mask == [1] * (budget - 29) + [0] * 29 and a.num_tool_calls == 1 and a.num_turns == 1
    # b: cut inside the turn, so its tool call never ran
    assert b.loss_mask == [1] * budget and b.num_tool_calls == 0 and b.num_turns == 1
    # c: observation "1152921504606846976\n" (20 tokens), then a second turn asked for the 10 tokens left
    obs = formatter.encode(str(2**60))
    assert len(obs) == 20 and c.response_ids[budget - 30 : budget - 10] == obs
    assert c.loss_mask == [1] * (budget - 30) + [0] * 20 + [1] * 10
    assert c.num_turns == 2 and engine.calls[1][1] == [SamplingRequest(max_tokens=10, seed=2 + STRIDE)]
    assert tok.decode(c.response_ids[-10:]) == "y" * 10


def test_guess_number_rewards_per_turn_with_the_tiny_tokenizer() -> None:
    tok = build_tokenizer()  # the tiny model's: no tool role, so observations use the text template
    rows = [{"extra_info": {"target": 37}}, {"extra_info": {"target": 5, "low": 1, "high": 9}}]
    prompt_a = _encode(tok, "Guess my number from 1 to 100.")
    prompt_b = _encode(tok, "Guess my number from 1 to 9.")
    engine = ScriptedEngine(tok, {tuple(prompt_a): ["50", "25", "37"], tuple(prompt_b): ["five", "9", "1", "2"]})
    env_factory = make_env_factory("guess_number", EnvContext(parser=HermesToolParser()))
    loop = AgentLoop(tok, env_factory, max_turns=4, max_response_tokens=200)
    a, b = loop.run(None, rows, [0, 1], engine)  # prompts rendered from each environment's reset()
    assert a.prompt_ids == prompt_a and b.prompt_ids == prompt_b
    assert a.turn_rewards == [0.0, 0.0, 1.0] and a.env_reward == 1.0 and a.finish_reason == "answer"
    assert tok.decode(a.response_ids) == "50Lower.\n25Higher.\n37"
    assert a.loss_mask == [1, 1] + [0] * 7 + [1, 1] + [0] * 8 + [1, 1]
    assert b.turn_rewards == [-0.1, 0.0, 0.0, 0.0] and b.finish_reason == "max_turns"
    assert b.env_reward == pytest.approx(-0.1)
    assert agent_metrics([a, b])["agent/env_reward/mean"] == pytest.approx(0.45)


class _BarrierEnv(Env):
    """Each step waits until every sample's step has started: only concurrent steps get past it."""

    barrier = threading.Barrier(4, timeout=30)

    def reset(self, sample: dict[str, Any]) -> str:
        return "go"

    def step(self, model_turn_text: str) -> StepResult:
        self.barrier.wait()
        return StepResult(observation=None, reward=1.0, done=True)


def test_environment_steps_of_a_turn_run_concurrently() -> None:
    tok = build_tokenizer()
    prompts = [_encode(tok, f"p{i}") for i in range(4)]
    engine = ScriptedEngine(tok, {tuple(p): ["a"] for p in prompts})
    loop = AgentLoop(
        tok, lambda: _BarrierEnv(EnvContext(parser=HermesToolParser())), max_turns=1, max_response_tokens=8
    )
    trajectories = loop.run(prompts, [{}] * 4, [0, 1, 2, 3], engine)  # serial steps would break the barrier
    assert [t.turn_rewards for t in trajectories] == [[1.0]] * 4


def test_bad_generate_and_arguments() -> None:
    tok = build_tokenizer()
    env_factory = make_env_factory("guess_number", EnvContext(parser=HermesToolParser()))
    with pytest.raises(ValueError, match="agent.max_turns=0 must be >= 1"):
        AgentLoop(tok, env_factory, max_turns=0, max_response_tokens=8)
    loop = AgentLoop(tok, env_factory, max_turns=1, max_response_tokens=8)
    rows = [{"extra_info": {"target": 1}}]
    with pytest.raises(RuntimeError, match="generate returned 0 outputs for 1 requests"):
        loop.run([[3]], rows, [0], lambda contexts, requests: [])
    with pytest.raises(RuntimeError, match="generate gave 0 log-probs for 1 tokens"):
        loop.run([[3]], rows, [0], lambda contexts, requests: [TurnOutput([5], [], "x", "stop")])


def test_prompts_rendered_with_the_rows_tools(tool_context: EnvContext) -> None:
    tok = build_ascii_tokenizer()
    rows = [{"prompt": [{"role": "user", "content": "Q"}], "tools": ["calculator"]}, {"prompt": "Plain"}]
    expected = [
        "<|im_start|>system\nTools: calculator<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>system\nTools: calculator, add<|im_end|>\n<|im_start|>user\nPlain<|im_end|>\n<|im_start|>assistant\n",
    ]
    prompts = [tuple(_encode(tok, text)) for text in expected]
    engine = ScriptedEngine(tok, {prompts[0]: ["A.<|im_end|>"], prompts[1]: ["B.<|im_end|>"]})
    loop = AgentLoop(tok, make_env_factory("tool", tool_context), max_turns=2, max_response_tokens=32)
    a, b = loop.run(None, rows, [0, 1], engine)
    assert (tuple(a.prompt_ids), tuple(b.prompt_ids)) == tuple(prompts)
    assert (a.final_text, b.final_text) == ("A.", "B.")
