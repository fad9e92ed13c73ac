"""Runs the agent loop against a real in-process vLLM engine and writes what happened as JSON (for test_loop_vllm).

    python tests/agent/vllm_agent_run.py MODEL_DIR {guess|tool} OUT.json

A separate process keeps vLLM's global state (torch threads, its distributed group) out of the pytest process.
"guess": the guessing game on the tiny model; every turn is sampled by vLLM. "tool": ToolEnv with real tools on
the ASCII tiny model; the random model never writes a tool call, so the first turn is teacher-forced (a scripted
tool call whose log-probs vLLM computes as prompt log-probs) and later turns are sampled. Stop strings (digits in
the game, a few letters in the tool run) keep the random model's turns short, so episodes have several turns.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # in-process engine, as in the colocated rollout
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from vllm import LLM, SamplingParams  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402

from rlhf.agent.env import EnvContext, make_env_factory  # noqa: E402
from rlhf.agent.executor import ToolExecutor  # noqa: E402
from rlhf.agent.loop import AgentLoop, SamplingRequest, TurnOutput  # noqa: E402
from rlhf.agent.parsing import HermesToolParser  # noqa: E402
from rlhf.agent.tools import load_tools  # noqa: E402

FORCED_CALLS = [
    '<tool_call>{"name": "calculator", "arguments": {"expression": "6*7"}}</tool_call>',
    '<tool_call>{"name": "calculator", "arguments": {"expression": "1/0"}}</tool_call>',
    '<tool_call>{"name": "python", "arguments": {"code": "print(2**10)"}}</tool_call>',
    '<tool_call>{"name": "web_search", "arguments": {"query": "x"}}</tool_call>',
    '<tool_call>{"name": "calculator", "arguments": {"expression": </tool_call>',
]


class VLLMGenerate:
    """A GenerateFn over vLLM: one request per sample with its own seed; vLLM's processed log-probs kept."""

    def __init__(self, llm: LLM, temperature: float = 1.0) -> None:
        self.llm, self.temperature = llm, temperature
        self.calls: list[dict] = []

    def __call__(self, contexts: list[list[int]], requests: list[SamplingRequest]) -> list[TurnOutput]:
        params = [
            SamplingParams(
                temperature=self.temperature,
                max_tokens=r.max_tokens,
                seed=r.seed,
                stop=list(r.stop),
                include_stop_str_in_output=True,
                logprobs=0,
            )
            for r in requests
        ]
        results = self.llm.generate([TokensPrompt(prompt_token_ids=c) for c in contexts], params, use_tqdm=False)
        outputs = []
        for result in results:
            sample = result.outputs[0]
            ids = list(sample.token_ids)
            log_probs = [step[token].logprob for step, token in zip(sample.logprobs, ids, strict=True)]
            outputs.append(TurnOutput(ids, log_probs, sample.text, str(sample.finish_reason)))
        self.calls.append({"contexts": contexts, "outputs": [asdict(o) for o in outputs]})
        return outputs


class ForcedFirstTurn:
    """Turn 1 replays a scripted text per sample (log-probs from vLLM's prompt log-probs); later turns sample."""

    def __init__(self, sampler: VLLMGenerate, tokenizer: object, texts: list[str]) -> None:
        self.sampler, self.tokenizer, self.texts = sampler, tokenizer, texts
        self.is_first = True

    def __call__(self, contexts: list[list[int]], requests: list[SamplingRequest]) -> list[TurnOutput]:
        if not self.is_first:
            return self.sampler(contexts, requests)
        self.is_first = False
        outputs = []
        for context, text in zip(contexts, self.texts, strict=True):
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=self.sampler.temperature)
            (result,) = self.sampler.llm.generate(
                [TokensPrompt(prompt_token_ids=context + ids)], params, use_tqdm=False
            )
            tail = result.prompt_logprobs[len(context) :]
            log_probs = [step[token].logprob for step, token in zip(tail, ids, strict=True)]
            outputs.append(TurnOutput(ids, log_probs, text, "stop"))
        self.sampler.calls.append({"contexts": contexts, "outputs": [asdict(o) for o in outputs]})
        return outputs


def main() -> None:
    model_dir, kind, out_path = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    llm = LLM(
        model=model_dir,
        dtype="float32",
        enforce_eager=True,
        max_model_len=256,
        seed=0,
        logprobs_mode="processed_logprobs",
    )
    tokenizer = llm.get_tokenizer()
    sampler = VLLMGenerate(llm)
    executor = None
    if kind == "guess":
        context = EnvContext(parser=HermesToolParser())
        rows = [{"extra_info": {"target": t, "low": 0, "high": 9}} for t in (3, 7, 0, 9, 5, 1)]
        loop = AgentLoop(
            tokenizer,
            make_env_factory("guess_number", context),
            max_turns=4,
            max_response_tokens=100,
            stop=tuple("0123456789"),
        )
        generate = sampler
    else:
        registry = load_tools(["calculator", "python"])
        executor = ToolExecutor(registry, num_workers=2, timeout_s=20.0)
        context = EnvContext(parser=HermesToolParser(), registry=registry, executor=executor)
        rows = [{"prompt": [{"role": "user", "content": f"Question {i}?"}]} for i in range(len(FORCED_CALLS))]
        loop = AgentLoop(
            tokenizer,
            make_env_factory("tool", context),
            max_turns=3,
            max_response_tokens=160,
            stop=("</tool_call>", *"aeiou12"),
        )
        generate = ForcedFirstTurn(sampler, tokenizer, FORCED_CALLS)
    trajectories = loop.run(None, rows, [11 * i for i in range(len(rows))], generate)
    if executor is not None:
        executor.close()
    out_path.write_text(
        json.dumps(
            {
                "trajectories": [asdict(t) for t in trajectories],
                "calls": sampler.calls,
                "observation_mode": "chat_template" if loop.formatter.uses_chat_template else "text",
            }
        )
    )


if __name__ == "__main__":
    main()
