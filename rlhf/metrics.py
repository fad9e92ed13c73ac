"""Metrics computed on the controller from a finished step's Batch, named as verl users know them."""

from __future__ import annotations

from collections import defaultdict

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
    response_length = batch["response_mask"].sum(-1)
    prompt_length = batch["attention_mask"].sum(-1) - response_length
    out: dict[str, float] = {}
    out.update(_stats("critic/score", batch["token_level_scores"].sum(-1)))
    out.update(_stats("critic/rewards", batch["token_level_rewards"].sum(-1)))
    out.update(_stats("critic/advantages", batch["advantages"][mask]))
    out.update(_stats("critic/returns", batch["returns"][mask]))
    if "values" in batch:
        out.update(_stats("critic/values", batch["values"][mask]))
    out.update(_stats("response_length", response_length))
    out["response_length/clip_ratio"] = (response_length == mask.shape[1]).float().mean().item()
    out.update(_stats("prompt_length", prompt_length))
    if "reward_error" in batch:
        out["reward/errors"] = batch["reward_error"].sum().item()
        out["reward/timeouts"] = batch["reward_timeout"].sum().item()
    for key in batch.tensors:
        if key.startswith("reward_extra/"):
            out[f"{key}/mean"] = batch[key].mean().item()
    if "entropy" in batch:
        out["rollout/entropy"] = batch["entropy"][mask].mean().item() if mask.any() else 0.0
    if "rollout_log_probs" in batch and "old_log_probs" in batch:
        out.update(logprob_diff_metrics(batch["old_log_probs"], batch["rollout_log_probs"], batch["response_mask"]))
    return out


def logprob_diff_metrics(trainer_lp: torch.Tensor, rollout_lp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Contract 2: |trainer log-prob - vLLM log-prob| of each sampled token, right after a weight sync."""
    diff = (trainer_lp - rollout_lp).abs()[mask.bool()]
    if diff.numel() == 0:
        return {"rollout/logprob_diff_mean": 0.0, "rollout/logprob_diff_max": 0.0}
    return {"rollout/logprob_diff_mean": diff.mean().item(), "rollout/logprob_diff_max": diff.max().item()}


def throughput_metrics(
    batch: Batch, step_time_s: float, num_devices: int, num_params: int, device_name: str
) -> dict[str, float]:
    """perf/throughput: tokens (prompt + response) per second per device; perf/mfu/actor where the peak is known."""
    num_tokens = batch["attention_mask"].sum().item()
    out = {
        "perf/total_num_tokens": float(num_tokens),
        "perf/throughput": num_tokens / step_time_s / num_devices,
    }
    peak = next((tflops for name, tflops in PEAK_TFLOPS.items() if name in device_name), None)
    if peak is not None and num_params > 0:
        # Actor FLOPs per token: forward for old log-probs (2N) + forward and backward per PPO epoch (6N).
        flops = 8 * num_params * num_tokens
        out["perf/mfu/actor"] = flops / step_time_s / num_devices / (peak * 1e12)
    return out


def validation_metrics(batch: Batch) -> dict[str, float]:
    """val/<source>/acc/mean@1 per data source (score > 0 counts as correct)."""
    scores = batch["token_level_scores"].sum(-1)
    by_source: dict[str, list[float]] = defaultdict(list)
    for source, score in zip(batch.non_tensors["data_source"], scores.tolist(), strict=True):
        by_source[source].append(float(score))
    out = {}
    for source, values in by_source.items():
        out[f"val/{source}/acc/mean@1"] = sum(v > 0 for v in values) / len(values)
        out[f"val/{source}/score/mean"] = sum(values) / len(values)
    return out


def sampled_validation_metrics(batch: Batch, k: int) -> dict[str, float]:
    """val/<source>/acc/pass@k (any of a prompt's k samples correct) and mean@k (the fraction correct)."""
    scores = batch["token_level_scores"].sum(-1).tolist()
    groups: dict[str, tuple[str, list[float]]] = {}
    for uid, source, score in zip(batch.non_tensors["uid"], batch.non_tensors["data_source"], scores, strict=True):
        groups.setdefault(uid, (source, []))[1].append(score)
    by_source: dict[str, list[list[float]]] = defaultdict(list)
    for source, values in groups.values():
        by_source[source].append(values)
    out = {}
    for source, prompts in by_source.items():
        out[f"val/{source}/acc/pass@{k}"] = sum(any(v > 0 for v in p) for p in prompts) / len(prompts)
        out[f"val/{source}/acc/mean@{k}"] = sum(sum(v > 0 for v in p) / len(p) for p in prompts) / len(prompts)
    return out
