"""The worker's agent rollout: the prompt Batch in, the single-turn Batch layout out, with masks, seeds, env rewards
and the agent tensors; the engine here is a scripted stand-in for vLLM's `LLM.generate` (a unit test of our code)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from rlhf.workers.agent_rollout import AgentRollout, env_rows

from rlhf.agent.config import AgentConfig
from rlhf.batch import Batch
from rlhf.config import RLHFConfig
from rlhf.models.tiny import build_tokenizer
from rlhf.sequences import last_token_index

CALL = '<tool_call>{"name":"calculator","arguments":{"expression":"12*34"}}</tool_call>'
OBSERVATION = "<tool_response>\n408\n</tool_response>\n"


@dataclass
class FakeLLM:
    """Answers each request with its script by prompt text: "12*34=" calls the calculator, then answers "408"."""

    tokenizer: Any
    requests: list[tuple[list[int], Any]] = field(default_factory=list)

    def generate(
        self, prompts: list[Any], params: list[Any], use_tqdm: bool = False, lora_request: Any = None
    ) -> list[Any]:
        outputs = []
        for prompt, p in zip(prompts, params, strict=True):
            context = prompt["prompt_token_ids"]
            self.requests.append((list(context), p))
            text = self.tokenizer.decode(context)
            if text.startswith("12*34="):
                reply, reason = ("408<eos>", "stop") if OBSERVATION in text else (CALL, "stop")
            else:
                reply, reason = "I give up, this is long", "length"
            ids = self.tokenizer.encode(reply, add_special_tokens=False)[: p.max_tokens]
            logprobs = [{t: SimpleNamespace(logprob=-0.5)} for t in ids]
            sample = SimpleNamespace(
                token_ids=ids,
                logprobs=logprobs,
                text=self.tokenizer.decode(ids, skip_special_tokens=True),
                finish_reason=reason,
            )
            outputs.append(SimpleNamespace(outputs=[sample]))
        return outputs


def _prompts(tokenizer: Any) -> Batch:
    texts = ["12*34=", "5*6="]
    return Batch(
        non_tensors={
            "prompt_ids": [tokenizer.encode(t, add_special_tokens=False) for t in texts],
            "messages": [[{"role": "user", "content": t}] for t in texts],
            "tools": [["calculator"], None],
            "ground_truth": ["408", "30"],
            "data_source": ["calc", "calc"],
            "extra_info": [{"tools_kwargs": {}}, {}],
            "uid": ["1-0", "1-1"],
            "sample_seed": [7, 8],
        }
    )


def test_env_rows_rebuild_the_verl_row() -> None:
    rows = env_rows(_prompts(build_tokenizer()))
    assert rows[0] == {
        "prompt": [{"role": "user", "content": "12*34="}],
        "tools": ["calculator"],
        "data_source": "calc",
        "reward_model": {"ground_truth": "408"},
        "extra_info": {"tools_kwargs": {}},
    }
    assert rows[1]["tools"] is None


def test_generate_gives_the_single_turn_layout_with_loss_masks() -> None:
    tokenizer = build_tokenizer()
    cfg = RLHFConfig()
    cfg.data.max_prompt_length, cfg.rollout.max_response_length = 8, 128
    cfg.agent = AgentConfig(enable=True, tools=["calculator"], max_turns=3, num_tool_workers=1)
    llm = FakeLLM(tokenizer)
    rollout = AgentRollout(cfg, llm, tokenizer)
    try:
        out = rollout.generate(_prompts(tokenizer), n=2, temperature=1.0, top_p=1.0)
    finally:
        rollout.close()
    assert len(out) == 4 and out["responses"].shape == (4, 128) and out["prompts"].shape == (4, 8)
    # Samples 0, 1: call, tool result (masked), answer + eos. Samples 2, 3: one turn cut by length.
    call, observation = tokenizer.encode(CALL), tokenizer.encode(OBSERVATION)
    answer = tokenizer.encode("408<eos>")
    expected = call + observation + answer
    for i in (0, 1):
        assert out["responses"][i, : len(expected)].tolist() == expected
        assert out["response_mask"][i].tolist() == [1.0] * len(call) + [0.0] * len(observation) + [1.0] * 4 + [0.0] * (
            128 - len(expected)
        )
        assert out["attention_mask"][i, 8:].sum().item() == len(expected)  # observations attended to
        assert out["rollout_log_probs"][i].tolist() == [-0.5 if m else 0.0 for m in out["response_mask"][i].tolist()]
        assert last_token_index(out["response_mask"][i : i + 1]).item() == len(expected) - 1  # the reward's token
    nt = out.non_tensors
    assert nt["response_text"][:2] == ["408", "408"]  # the final turn: what a rule reward scores
    assert nt["trajectory_text"][0] == CALL + OBSERVATION + "408"
    assert nt["uid"] == ["1-0", "1-0", "1-1", "1-1"] and nt["ground_truth"][2] == "30"
    assert out["agent_num_turns"].tolist() == [2.0, 2.0, 1.0, 1.0]
    assert out["agent_tool_calls"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert out["agent_finish_answer"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert out["agent_finish_length"].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert out["env_rewards"].tolist() == [0.0] * 4
    assert torch.all(out["agent_tools_s"] == out["agent_tools_s"][0])
    # Seeds: the single-turn path's (sample_seed * 1009 + i % n), plus the loop's stride on turn 2.
    first_turn = [p.seed for _, p in llm.requests[:4]]
    assert first_turn == [7 * 1009, 7 * 1009 + 1, 8 * 1009, 8 * 1009 + 1]
    assert [p.seed for _, p in llm.requests[4:]] == [7 * 1009 + 1_000_003, 7 * 1009 + 1 + 1_000_003]
    assert all(p.stop == ["</tool_call>"] and p.include_stop_str_in_output for _, p in llm.requests)
