"""The multi-turn agent loop, token in and token out: generate, step the environments, append, repeat.

Turn k of every active sample is generated in one batched call, then all their environment steps (tool calls) run
concurrently, then turn k+1. The trained sequence is exactly what the engine sampled plus the observation tokens,
each tokenised once: the conversation is never re-tokenised (re-tokenising decoded text can merge or split tokens
differently, so the trainer would score tokens the policy never sampled; verl #2189).
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rlhf.agent.env import NUM_TOOL_CALLS, NUM_TOOL_ERRORS, NUM_TOOL_TIMEOUTS, Env, StepResult
from rlhf.agent.observation import ObservationFormatter, as_messages

logger = logging.getLogger(__name__)

# Per-turn sampling seeds: seed + turn * this prime, so turns of one sample draw independent streams.
_TURN_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class SamplingRequest:
    """One sample's generation request for one turn (temperature and top_p belong to the GenerateFn)."""

    max_tokens: int
    seed: int
    stop: tuple[str, ...] = ()
    """Stop strings; the generation keeps a matched stop string in its output."""


@dataclass
class TurnOutput:
    """What the engine produced for one request."""

    token_ids: list[int]
    log_probs: list[float]
    """The engine's log-prob of each sampled token (one per token id)."""
    text: str
    finish_reason: str
    """"length" when max_tokens cut the turn; anything else ("stop") means it ended by itself."""


GenerateFn = Callable[[list[list[int]], list[SamplingRequest]], list[TurnOutput]]
"""generate(contexts, requests) -> one TurnOutput per context: contexts are full token-id sequences."""

FinishReason = Literal["answer", "max_turns", "length"]


@dataclass
class Trajectory:
    """One sample's episode: the prompt, then model and observation tokens interleaved."""

    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    """Model tokens exactly as generated and observation tokens as tokenised once, in order."""
    loss_mask: list[int] = field(default_factory=list)
    """1 on model tokens, 0 on observation tokens."""
    rollout_log_probs: list[float] = field(default_factory=list)
    """The engine's log-probs on model tokens, 0.0 on observation tokens."""
    turn_rewards: list[float | None] = field(default_factory=list)
    """The environment's reward for each model turn it stepped (None where it gave none)."""
    num_turns: int = 0
    num_tool_calls: int = 0
    num_tool_errors: int = 0
    num_tool_timeouts: int = 0
    finish_reason: FinishReason = "answer"
    turn_texts: list[str] = field(default_factory=list)
    """The text of each model turn."""
    response_text: str = ""
    """The whole response decoded from response_ids (special tokens skipped)."""

    @property
    def final_text(self) -> str:
        """The last model turn's text (what a rule reward function scores)."""
        return self.turn_texts[-1] if self.turn_texts else ""

    @property
    def env_reward(self) -> float:
        """Sum of the environment's per-turn rewards (0.0 if it gave none)."""
        return float(sum(r for r in self.turn_rewards if r is not None))

    def append(self, ids: Sequence[int], is_model: bool, log_probs: Sequence[float] | None = None) -> None:
        self.response_ids.extend(ids)
        self.loss_mask.extend([1 if is_model else 0] * len(ids))
        self.rollout_log_probs.extend(log_probs if log_probs is not None else [0.0] * len(ids))


class AgentLoop:
    """Runs multi-turn episodes for a batch of samples against a GenerateFn."""

    def __init__(
        self,
        tokenizer: Any,
        env_factory: Callable[[], Env],
        max_turns: int,
        max_response_tokens: int,
        observation_formatter: ObservationFormatter | None = None,
        stop: Sequence[str] = (),
        max_step_threads: int = 64,
    ) -> None:
        """
        Args:
            tokenizer: the policy's Hugging Face tokenizer.
            env_factory: makes one fresh environment per sample.
            max_turns: model turns per episode at most (`agent.max_turns`).
            max_response_tokens: model + observation tokens per episode at most (`rollout.max_response_length`).
            observation_formatter: how observations become tokens; ObservationFormatter(tokenizer) when None.
            stop: stop strings for every turn (e.g. the parser's "</tool_call>"), kept in the output.
            max_step_threads: environment steps run at once.

        Raises:
            ValueError: max_turns or max_response_tokens < 1.
        """
        if max_turns < 1:
            raise ValueError(f"agent.max_turns={max_turns} must be >= 1")
        if max_response_tokens < 1:
            raise ValueError(f"max_response_tokens={max_response_tokens} must be >= 1")
        self.tokenizer = tokenizer
        self.env_factory = env_factory
        self.max_turns = max_turns
        self.max_response_tokens = max_response_tokens
        self.formatter = observation_formatter or ObservationFormatter(tokenizer)
        self.stop = tuple(stop)
        self.max_step_threads = max_step_threads
        self.last_timing_s: dict[str, float] = {}
        """Wall seconds of the last run() in generation ("generate") and environment steps ("tools")."""

    def run(
        self,
        prompt_ids: list[list[int]] | None,
        rows: list[dict[str, Any]],
        seeds: list[int],
        generate: GenerateFn,
    ) -> list[Trajectory]:
        """Play one episode per row.

        Args:
            prompt_ids: each sample's prompt token ids; None renders each environment's reset() messages with the
                chat template (with the episode's tool schemas, when it offers tools).
            rows: the data rows (verl format), one per sample; passed to each environment's reset().
            seeds: one sampling seed per sample.
            generate: the engine; called once per turn with every active sample.

        Returns:
            One Trajectory per row, in order; len(response_ids) <= max_response_tokens.
        """
        if len(rows) != len(seeds) or (prompt_ids is not None and len(prompt_ids) != len(rows)):
            raise ValueError(f"agent loop got {len(rows)} rows, {len(seeds)} seeds and a different number of prompts")
        envs = [self.env_factory() for _ in rows]
        self.last_timing_s = {"generate": 0.0, "tools": 0.0}
        try:
            initial = [env.reset(row) for env, row in zip(envs, rows, strict=True)]
            if prompt_ids is None:
                prompt_ids = [self._render_prompt(obs, env) for obs, env in zip(initial, envs, strict=True)]
            trajectories = [Trajectory(prompt_ids=list(p)) for p in prompt_ids]
            with concurrent.futures.ThreadPoolExecutor(max(1, min(len(rows), self.max_step_threads))) as threads:
                active = list(range(len(rows)))
                for turn in range(self.max_turns):
                    if not active:
                        break
                    active = self._turn(turn, active, trajectories, envs, seeds, generate, threads)
        finally:
            for env in envs:
                env.close()
        for trajectory in trajectories:
            trajectory.response_text = self.tokenizer.decode(trajectory.response_ids, skip_special_tokens=True)
        return trajectories

    def _render_prompt(self, initial: Any, env: Env) -> list[int]:
        messages = [{"role": "user", "content": initial}] if isinstance(initial, str) else initial
        text = self.tokenizer.apply_chat_template(
            messages, tools=env.tool_schemas() or None, tokenize=False, add_generation_prompt=True
        )
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _turn(
        self,
        turn: int,
        active: list[int],
        trajectories: list[Trajectory],
        envs: list[Env],
        seeds: list[int],
        generate: GenerateFn,
        threads: concurrent.futures.ThreadPoolExecutor,
    ) -> list[int]:
        """One turn for the active samples; returns those still active after it."""
        # 1. generate turn `turn` of every active sample in one batched call
        contexts = [trajectories[i].prompt_ids + trajectories[i].response_ids for i in active]
        requests = [
            SamplingRequest(
                max_tokens=self.max_response_tokens - len(trajectories[i].response_ids),
                seed=seeds[i] + turn * _TURN_SEED_STRIDE,
                stop=self.stop,
            )
            for i in active
        ]
        start = time.monotonic()
        outputs = generate(contexts, requests)
        self.last_timing_s["generate"] += time.monotonic() - start
        if len(outputs) != len(active):
            raise RuntimeError(f"generate returned {len(outputs)} outputs for {len(active)} requests")
        stepping = []
        for i, request, output in zip(active, requests, outputs, strict=True):
            if len(output.log_probs) != len(output.token_ids):
                raise RuntimeError(
                    f"generate gave {len(output.log_probs)} log-probs for {len(output.token_ids)} tokens"
                )
            trajectory = trajectories[i]
            ids = output.token_ids[: request.max_tokens]  # an engine must not overrun; never trust it to
            trajectory.append(ids, is_model=True, log_probs=output.log_probs[: len(ids)])
            trajectory.num_turns += 1
            trajectory.turn_texts.append(output.text)
            if output.finish_reason == "length" or len(ids) < len(output.token_ids):
                trajectory.finish_reason = "length"  # cut mid-turn: its tool calls are not run
            else:
                stepping.append(i)
        # 2. step every environment that has a complete turn, concurrently (one slow tool never serialises them)
        start = time.monotonic()
        results = list(threads.map(lambda i: envs[i].step(trajectories[i].turn_texts[-1]), stepping))
        self.last_timing_s["tools"] += time.monotonic() - start
        # 3. record rewards and counts, append observations
        still_active = []
        for i, result in zip(stepping, results, strict=True):
            if self._absorb(trajectories[i], result, is_last_turn=turn + 1 == self.max_turns):
                still_active.append(i)
        return still_active

    def _absorb(self, trajectory: Trajectory, result: StepResult, is_last_turn: bool) -> bool:
        """Apply one step's result to the trajectory; True if the episode goes on."""
        trajectory.turn_rewards.append(result.reward)
        trajectory.num_tool_calls += int(result.info.get(NUM_TOOL_CALLS, 0))
        trajectory.num_tool_errors += int(result.info.get(NUM_TOOL_ERRORS, 0))
        trajectory.num_tool_timeouts += int(result.info.get(NUM_TOOL_TIMEOUTS, 0))
        if result.done:
            trajectory.finish_reason = "answer"
            return False
        if is_last_turn:
            trajectory.finish_reason = "max_turns"  # the observation would never be answered: not appended
            return False
        if result.observation is not None and as_messages(result.observation):
            last_token = trajectory.response_ids[-1] if trajectory.response_ids else None
            ids = self.formatter.encode(result.observation, last_token)
            room = self.max_response_tokens - len(trajectory.response_ids)
            trajectory.append(ids[:room], is_model=False)
        if len(trajectory.response_ids) >= self.max_response_tokens:  # no room left for another model token
            trajectory.finish_reason = "length"
            return False
        return True


def agent_metrics(trajectories: Sequence[Trajectory], timing_s: dict[str, float] | None = None) -> dict[str, float]:
    """Rollout metrics with the issue's names: turns, tool calls, errors, timeouts, finish reasons, env reward.

    Args:
        trajectories: a batch of episodes.
        timing_s: AgentLoop.last_timing_s; its "tools" entry becomes timing_s/tools.

    Returns:
        agent/num_turns/mean|max, agent/tool_calls/mean, agent/tool_errors and agent/tool_timeouts (batch
        totals), agent/finish/{answer,max_turns,length} (fractions), agent/env_reward/mean, timing_s/tools.
    """
    n = len(trajectories)
    if n == 0:
        return {}
    metrics = {
        "agent/num_turns/mean": sum(t.num_turns for t in trajectories) / n,
        "agent/num_turns/max": float(max(t.num_turns for t in trajectories)),
        "agent/tool_calls/mean": sum(t.num_tool_calls for t in trajectories) / n,
        "agent/tool_errors": float(sum(t.num_tool_errors for t in trajectories)),
        "agent/tool_timeouts": float(sum(t.num_tool_timeouts for t in trajectories)),
        "agent/env_reward/mean": sum(t.env_reward for t in trajectories) / n,
    }
    for reason in ("answer", "max_turns", "length"):
        metrics[f"agent/finish/{reason}"] = sum(t.finish_reason == reason for t in trajectories) / n
    if timing_s is not None and "tools" in timing_s:
        metrics["timing_s/tools"] = timing_s["tools"]
    return metrics
