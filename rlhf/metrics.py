"""Metrics computed on the controller from a finished step's Batch, named as verl users know them.

The data metrics (`critic/score/*`, `response_length/*`, `prompt_length/*`, ...), throughput and MFU, and the
validation metrics (`val-core/<source>/acc/mean@N`, `val-aux/...`) use verl's names, so dashboards carry over.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import torch

from rlhf.batch import Batch

# Dense bf16 peak of the GPUs we know; MFU is omitted where the peak is unknown (CPUs vary too much to guess).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


def _stats(prefix: str, values: torch.Tensor) -> dict[str, float]:
    if values.numel() == 0:
        return {}
    values = values.float()
    return {
        f"{prefix}/mean": values.mean().item(),
        f"{prefix}/max": values.max().item(),
        f"{prefix}/min": values.min().item(),
    }


def data_metrics(batch: Batch) -> dict[str, float]:
    """Scores, rewards, advantages, lengths, reward failures and the trainer-vs-rollout log-prob gap."""
    mask = batch["response_mask"].bool()
    # Every response token, a multi-turn response's observation tokens included (verl's response_length); the
    # loss mask counts only the tokens the policy generated.
    response_attention = batch["attention_mask"][:, -mask.shape[1] :]
    response_length = response_attention.sum(-1)
    prompt_length = batch["attention_mask"].sum(-1) - response_length
    out: dict[str, float] = {}
    out.update(_stats("critic/score", batch["token_level_scores"].sum(-1)))
    out.update(_stats("critic/rewards", batch["token_level_rewards"].sum(-1)))
    out.update(_stats("critic/advantages", batch["advantages"][mask]))
    out.update(_stats("critic/returns", batch["returns"][mask]))
    if "values" in batch:
        out.update(_stats("critic/values", batch["values"][mask]))
        out["critic/vf_explained_var"] = explained_variance(batch["values"], batch["returns"], batch["response_mask"])
    out.update(_stats("response_length", response_length))
    out["response_length/clip_ratio"] = (response_length == mask.shape[1]).float().mean().item()
    out.update(_stats("prompt_length", prompt_length))
    if "reward_error" in batch:
        out["reward/errors"] = batch["reward_error"].sum().item()
        out["reward/timeouts"] = batch["reward_timeout"].sum().item()
    for key in batch.tensors:
        if key.startswith("reward_extra/"):
            out[f"{key}/mean"] = batch[key].nanmean().item() if not batch[key].isnan().all() else 0.0
    if "entropy" in batch:
        out["rollout/entropy"] = batch["entropy"][mask].mean().item() if mask.any() else 0.0
    if "rollout_log_probs" in batch and "old_log_probs" in batch:
        out.update(logprob_diff_metrics(batch["old_log_probs"], batch["rollout_log_probs"], batch["response_mask"]))
    if "agent_num_turns" in batch:
        out.update(agent_metrics(batch))
    return out


def agent_metrics(batch: Batch) -> dict[str, float]:
    """Multi-turn rollout metrics (the per-sample agent_* tensors of rlhf.workers.agent_rollout).

    Returns:
        agent/num_turns/mean|max, agent/tool_calls/mean, agent/tool_errors and agent/tool_timeouts (batch totals),
        agent/finish/{answer,max_turns,length} (fractions of episodes), agent/env_reward/mean,
        agent/model_tokens/mean (trained tokens per response), and timing_s/tools (the slowest rank's seconds in
        environment steps).
    """
    turns = batch["agent_num_turns"]
    out = {
        "agent/num_turns/mean": turns.mean().item(),
        "agent/num_turns/max": turns.max().item(),
        "agent/tool_calls/mean": batch["agent_tool_calls"].mean().item(),
        "agent/tool_errors": batch["agent_tool_errors"].sum().item(),
        "agent/tool_timeouts": batch["agent_tool_timeouts"].sum().item(),
        "agent/env_reward/mean": batch["env_rewards"].mean().item(),
        "agent/model_tokens/mean": batch["response_mask"].sum(-1).mean().item(),
        "timing_s/tools": batch["agent_tools_s"].max().item(),
    }
    for key in batch.tensors:
        if key.startswith("agent_finish_"):
            out[f"agent/finish/{key.removeprefix('agent_finish_')}"] = batch[key].mean().item()
    return out


def logprob_diff_metrics(trainer_lp: torch.Tensor, rollout_lp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Contract 2: |trainer log-prob - vLLM log-prob| of each sampled token, right after a weight sync."""
    diff = (trainer_lp - rollout_lp).abs()[mask.bool()]
    if diff.numel() == 0:
        return {"rollout/logprob_diff_mean": 0.0, "rollout/logprob_diff_max": 0.0}
    return {"rollout/logprob_diff_mean": diff.mean().item(), "rollout/logprob_diff_max": diff.max().item()}


def throughput_metrics(batch: Batch, timings: dict[str, float], num_devices: int) -> dict[str, float]:
    """perf/total_num_tokens, perf/time_per_step and perf/throughput (tokens, prompt + response, per s per device)."""
    num_tokens = batch["attention_mask"].sum().item()
    step_time = timings["timing_s/step"]
    return {
        "perf/total_num_tokens": float(num_tokens),
        "perf/time_per_step": step_time,
        "perf/throughput": num_tokens / step_time / num_devices,
    }


def approx_num_params(config: object) -> int:
    """Parameters of a decoder-only transformer from its config (for MFU); 0 when the shape is unknown."""
    try:
        h, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size  # type: ignore[attr-defined]
        inter = config.intermediate_size  # type: ignore[attr-defined]
    except AttributeError:
        return 0
    return layers * (4 * h * h + 3 * h * inter) + vocab * h


def update_flops(num_params: int, attention_flops_per_token_pair: float, seq_lengths: list[int], passes: int) -> float:
    """FLOPs of `passes` forward+backward passes over sequences of `seq_lengths` tokens (verl's FlopsCounter form).

    Dense: 6 x params x tokens; attention: 6 x (2 x layers x hidden) x sum of squared lengths (the causal halving
    is ignored, as verl does).
    """
    tokens = sum(seq_lengths)
    return passes * (6 * num_params * tokens + attention_flops_per_token_pair * sum(n * n for n in seq_lengths))


def mfu_metrics(flops: float, update_time_s: float, num_devices: int, device_name: str) -> dict[str, float]:
    """perf/mfu/actor: the actor update's FLOPs over its time and the devices' dense bf16 peak (where it is known)."""
    peak = next((tflops for name, tflops in PEAK_TFLOPS.items() if name in device_name), None)
    if peak is None or update_time_s <= 0:
        return {}
    return {"perf/mfu/actor": flops / update_time_s / num_devices / (peak * 1e12)}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """critic/vf_explained_var: 1 - Var(returns - values) / Var(returns) over the response tokens (verl's)."""
    m = mask.bool()
    ret, diff = returns[m].double(), (returns - values)[m].double()
    if ret.numel() < 2:
        return 0.0
    var = ret.var(unbiased=False)
    return float(1.0 - diff.var(unbiased=False) / var) if var > 0 else 0.0


def validation_metrics(
    acc: list[float], scores: list[float], uids: list[str], sources: list[str], answers: list[str], n: int
) -> dict[str, float]:
    """verl's validation metrics, per data source, for n responses per prompt.

    `val-core/<source>/acc/mean@n` (and, for n > 1, `best@n/mean` and `maj@n/mean`) are the headline numbers;
    `val-aux/<source>/acc/std@n`, `worst@n/mean` and every statistic of the raw reward (`val-aux/<source>/reward/*`)
    are auxiliary. best@n is the fraction of prompts with a correct response among their n (pass@n for 0/1 acc);
    maj@n is the accuracy of each prompt's most frequent answer (ties: the first seen).

    Args:
        acc: per response, 1.0 if correct (the task's full reward, or the reward function's own `acc`), else 0.0.
        scores: per response, the reward.
        uids: per response, its prompt's id (n responses share one).
        sources: per response, its prompt's data_source.
        answers: per response, the answer text majority voting compares.
    """
    prompts: dict[tuple[str, str], list[tuple[float, float, str]]] = defaultdict(list)
    for a, r, uid, source, answer in zip(acc, scores, uids, sources, answers, strict=True):
        prompts[(source, uid)].append((a, r, answer.strip()))
    by_source: dict[str, list[list[tuple[float, float, str]]]] = defaultdict(list)
    for (source, _), samples in prompts.items():
        by_source[source].append(samples)
    out: dict[str, float] = {}
    for source, groups in by_source.items():
        for var, column in (("acc", 0), ("reward", 1)):
            stats = _group_stats([[s[column] for s in g] for g in groups], n)
            if var == "acc" and n > 1:
                stats[f"maj@{n}/mean"] = _mean([_majority_acc(g) for g in groups])
            for name, value in stats.items():
                is_core = var == "acc" and name.split("@")[0] in ("mean", "best", "maj")
                out[f"{'val-core' if is_core else 'val-aux'}/{source}/{var}/{name}"] = value
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _group_stats(groups: list[list[float]], n: int) -> dict[str, float]:
    stats = {f"mean@{n}": _mean([_mean(g) for g in groups])}
    if n > 1:
        stats[f"std@{n}"] = _mean([float(torch.tensor(g).std(unbiased=False)) for g in groups])
        stats[f"best@{n}/mean"] = _mean([max(g) for g in groups])
        stats[f"worst@{n}/mean"] = _mean([min(g) for g in groups])
    return stats


def _majority_acc(samples: list[tuple[float, float, str]]) -> float:
    counts = Counter(answer for _, _, answer in samples)
    top = max(counts.values())
    winner = next(answer for _, _, answer in samples if counts[answer] == top)
    return next(a for a, _, answer in samples if answer == winner)
