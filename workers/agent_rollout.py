"""Multi-turn rollouts on this rank's vLLM engine: the agent loop (rlhf.agent) with vLLM as its GenerateFn.

Each turn of every active sample of the rank goes to vLLM in one batched `generate` call; the environments (tool
calls) then step concurrently, in worker processes of this Ray actor (never the driver). The result has the
single-turn layout (`rlhf.sequences.assemble`), with `response_mask` the loss mask: observation tokens are attended
to but not trained on, and their rollout_log_probs are 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt

from rlhf.agent.loop import SamplingRequest, Trajectory, TurnOutput
from rlhf.agent.runtime import build_agent, trajectories_to_batch
from rlhf.batch import Batch
from rlhf.config import RLHFConfig

logger = logging.getLogger(__name__)

# Per-sample tensors the trainer turns into the agent/* metrics (see rlhf.metrics.agent_metrics).
AGENT_COUNTS = {
    "agent_num_turns": "num_turns",
    "agent_tool_calls": "num_tool_calls",
    "agent_tool_errors": "num_tool_errors",
    "agent_tool_timeouts": "num_tool_timeouts",
}
FINISH_REASONS = ("answer", "max_turns", "length")


class VLLMGenerate:
    """A GenerateFn over an in-process vLLM engine: one request per sample with its own seed, vLLM's processed
    (post-temperature) log-probs kept, stop strings kept in the output."""

    def __init__(self, llm: LLM, temperature: float, top_p: float, lora_request: Any = None) -> None:
        """`lora_request`: vLLM's LoRARequest of the policy's adapter (LoRA with adapter sync), else None."""
        self.llm, self.temperature, self.top_p, self.lora_request = llm, temperature, top_p, lora_request

    def __call__(self, contexts: list[list[int]], requests: list[SamplingRequest]) -> list[TurnOutput]:
        """One batched generate call for every context (full token ids: prompt + response so far)."""
        params = [
            SamplingParams(
                n=1,
                temperature=self.temperature,
                top_p=self.top_p,
                max_tokens=r.max_tokens,
                seed=r.seed,
                stop=list(r.stop) or None,
                include_stop_str_in_output=True,
                logprobs=0,
                detokenize=True,
            )
            for r in requests
        ]
        results = self.llm.generate(
            [TokensPrompt(prompt_token_ids=c) for c in contexts], params, use_tqdm=False, lora_request=self.lora_request
        )
        outputs = []
        for result in results:
            sample = result.outputs[0]
            ids = list(sample.token_ids)
            log_probs = [step[token].logprob for step, token in zip(sample.logprobs or [], ids, strict=True)]
            outputs.append(TurnOutput(ids, log_probs, sample.text, str(sample.finish_reason)))
        return outputs


def env_rows(prompts: Batch) -> list[dict[str, Any]]:
    """The verl row each environment's reset() reads, rebuilt from the prompt Batch's per-sample fields."""
    nt = prompts.non_tensors
    num = len(nt["prompt_ids"])
    messages, tools = nt.get("messages", [None] * num), nt.get("tools", [None] * num)
    return [
        {
            "prompt": messages[i],
            "tools": tools[i],
            "data_source": nt["data_source"][i],
            "reward_model": {"ground_truth": nt["ground_truth"][i]},
            "extra_info": nt["extra_info"][i],
        }
        for i in range(num)
    ]


def agent_tensors(trajectories: list[Trajectory], tools_s: float) -> dict[str, torch.Tensor]:
    """Per-sample float32 [B] tensors: env_rewards, the agent counts, finish reasons as 0/1 flags, and this rank's
    seconds in tool calls (the same on every row of the rank: the trainer takes the slowest rank's)."""
    out = {"env_rewards": torch.tensor([t.env_reward for t in trajectories], dtype=torch.float32)}
    for key, attribute in AGENT_COUNTS.items():
        out[key] = torch.tensor([getattr(t, attribute) for t in trajectories], dtype=torch.float32)
    for reason in FINISH_REASONS:
        out[f"agent_finish_{reason}"] = torch.tensor([t.finish_reason == reason for t in trajectories]).float()
    out["agent_tools_s"] = torch.full((len(trajectories),), tools_s, dtype=torch.float32)
    return out


class AgentRollout:
    """The agent loop of one rank: tools, parser, environments and tool worker processes built once."""

    def __init__(
        self, cfg: RLHFConfig, llm: LLM, tokenizer: Any, lora_request: Callable[[], Any] = lambda: None
    ) -> None:
        """`lora_request` gives the policy adapter's current LoRARequest (a new one after each sync), or None.

        Raises:
            ValueError: a bad agent.* plugin (the driver checked them already; a worker that sees other files fails).
        """
        self.cfg, self.llm, self.tokenizer, self.lora_request = cfg, llm, tokenizer, lora_request
        self.runtime = build_agent(cfg.agent, tokenizer, cfg.rollout.max_response_length)

    def generate(self, batch: Batch, n: int, temperature: float, top_p: float) -> Batch:
        """Play n episodes per prompt row of `batch`; the same layout and fields as VLLMRollout.generate.

        Returns:
            n * B rows (a prompt's n episodes adjacent): prompts [nB, P], responses / response_mask (1 on model
            tokens only) / rollout_log_probs [nB, R], input_ids / attention_mask / position_ids [nB, P+R],
            env_rewards and the agent_* tensors [nB]; non_tensors `response_text` (the final model turn, what
            rule rewards score), `trajectory_text` (the whole response decoded), finish_reason, num_turns, and the
            input's fields repeated.
        """
        expanded = batch.repeat_interleave(n)
        # The single-turn path's per-sample seeds; the loop adds a stride per turn.
        seeds = [int(s) * 1009 + i % n for i, s in enumerate(expanded.non_tensors["sample_seed"])]
        generate = VLLMGenerate(self.llm, temperature, top_p, self.lora_request())
        trajectories = self.runtime.loop.run(expanded.non_tensors["prompt_ids"], env_rows(expanded), seeds, generate)
        d, r = self.cfg.data, self.cfg.rollout
        out = trajectories_to_batch(
            trajectories, d.max_prompt_length, r.max_response_length, self.tokenizer.pad_token_id
        )
        for key, value in agent_tensors(trajectories, self.runtime.loop.last_timing_s["tools"]).items():
            out[key] = value
        trajectory_text = out.non_tensors.pop("response_text")
        final_text = out.non_tensors.pop("final_text")
        out.non_tensors.pop("env_reward")
        out.non_tensors.update(expanded.non_tensors)
        out.non_tensors["response_text"] = final_text
        out.non_tensors["trajectory_text"] = trajectory_text
        return out

    def close(self) -> None:
        """Stop the tool worker processes."""
        self.runtime.close()
