"""The agent loop on a real vLLM engine: trained tokens are exactly vLLM's, contexts are never re-tokenised,
observation tokens are masked, and vLLM's log-probs match a transformers forward over prompt + response (fp32)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from ascii_tokenizer import build_ascii_tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.agent.observation import ObservationFormatter

RUNNER = Path(__file__).with_name("vllm_agent_run.py")
TOLERANCE = 1e-3  # the project's fp32 log-prob agreement contract


def _run(model_dir: Path, kind: str, out: Path) -> dict[str, Any]:
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(model_dir), kind, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text())


def _check_token_in_token_out(run: dict[str, Any], budget: int) -> None:
    """Replay the engine calls: sample i is in call k iff it had more than k turns (in index order); its context
    there is its prompt plus exactly its response so far, and the next tokens are exactly what the engine returned."""
    trajectories = run["trajectories"]
    positions = [0] * len(trajectories)
    for k, call in enumerate(run["calls"]):
        active = [i for i, t in enumerate(trajectories) if t["num_turns"] > k]
        assert len(call["contexts"]) == len(active)
        for i, context, output in zip(active, call["contexts"], call["outputs"], strict=True):
            t = trajectories[i]
            prompt, response = t["prompt_ids"], t["response_ids"]
            observation = response[positions[i] : len(context) - len(prompt)]
            assert context == prompt + response[: len(context) - len(prompt)]  # token in
            assert t["loss_mask"][positions[i] : len(context) - len(prompt)] == [0] * len(observation)
            start, end = len(context) - len(prompt), len(context) - len(prompt) + len(output["token_ids"])
            assert response[start:end] == output["token_ids"]  # token out: vLLM's ids, as sampled
            assert t["loss_mask"][start:end] == [1] * (end - start)
            assert t["rollout_log_probs"][start:end] == output["log_probs"]
            positions[i] = end
    for t, position in zip(trajectories, positions, strict=True):
        assert len(t["response_ids"]) == len(t["loss_mask"]) == len(t["rollout_log_probs"]) <= budget
        assert t["loss_mask"][position:] == [0] * (len(t["response_ids"]) - position)  # a cut last observation
        assert all(lp == 0.0 for lp, m in zip(t["rollout_log_probs"], t["loss_mask"], strict=True) if m == 0)


def _check_log_probs_match_transformers(run: dict[str, Any], model_dir: Path) -> float:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    worst = 0.0
    for t in run["trajectories"]:
        ids = torch.tensor([t["prompt_ids"] + t["response_ids"]])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
        token_log_probs = log_probs.gather(1, ids[0, 1:, None])[:, 0][len(t["prompt_ids"]) - 1 :]
        mask = torch.tensor(t["loss_mask"], dtype=torch.bool)
        diff = (token_log_probs[mask] - torch.tensor(t["rollout_log_probs"])[mask]).abs().max().item()
        worst = max(worst, diff)
    assert worst < TOLERANCE, f"vLLM and transformers log-probs differ by up to {worst}"
    return worst


def _observation_segments(t: dict[str, Any]) -> list[list[int]]:
    segments, current = [], []
    for token, mask in zip(t["response_ids"], t["loss_mask"], strict=True):
        if mask == 0:
            current.append(token)
        elif current:
            segments.append(current)
            current = []
    return segments + ([current] if current else [])


@pytest.mark.slow
def test_guess_number_on_vllm(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = _run(tiny_model_dir, "guess", tmp_path / "guess.json")
    trajectories = run["trajectories"]
    assert run["observation_mode"] == "text"  # the tiny template has no tool role
    assert sum(t["num_turns"] for t in trajectories) > len(trajectories)  # several turns were played
    _check_token_in_token_out(run, budget=100)
    _check_log_probs_match_transformers(run, tiny_model_dir)
    # Each observation is the feedback for the turn before it, tokenised once by the text template.
    formatter = ObservationFormatter(AutoTokenizer.from_pretrained(tiny_model_dir))
    feedback = {0.0: ("Higher.", "Lower."), -0.1: ("Answer with a number.",)}
    for t in trajectories:
        for segment, reward in zip(_observation_segments(t), t["turn_rewards"], strict=False):
            expected = [formatter.encode([{"role": "user", "content": text}]) for text in feedback[reward]]
            assert any(segment == e[: len(segment)] for e in expected)
        assert t["finish_reason"] in ("answer", "max_turns", "length")
        assert (t["finish_reason"] == "answer") == (t["turn_rewards"][-1:] == [1.0])


@pytest.mark.slow
def test_tool_calls_on_vllm(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    model_dir = build_ascii_tiny_model(tmp_path_factory.mktemp("models") / "ascii-tiny")
    run = _run(model_dir, "tool", tmp_path / "tool.json")
    trajectories = run["trajectories"]
    assert run["observation_mode"] == "chat_template"
    _check_token_in_token_out(run, budget=160)
    _check_log_probs_match_transformers(run, model_dir)  # the forced first turn included
    assert [(t["num_tool_calls"], t["num_tool_errors"]) for t in trajectories] == [
        (1, 0),
        (1, 1),
        (1, 0),
        (1, 1),
        (1, 1),
    ]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    formatter = ObservationFormatter(tokenizer)
    first_turn_end = tokenizer.convert_tokens_to_ids(">")  # the forced turns end with "</tool_call>"
    for t, (name, content) in zip(
        trajectories[:3],
        [("calculator", "42"), ("calculator", "Error: division by zero"), ("python", "1024\n")],
        strict=True,
    ):
        expected = formatter.encode([{"role": "tool", "name": name, "content": content}], first_turn_end)
        segment = _observation_segments(t)[0]
        assert segment == expected[: len(segment)] and len(segment) > 0
