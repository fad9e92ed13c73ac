"""Summaries of the benchmark's per-step records: medians with min/max per stage, tokens/s, ratios, the floor.

Pure functions over plain dicts (the `timing_s/*` and `perf/*` keys both frameworks' records share), so run.py's
table and JSON come from one place and can be tested without running anything.
"""

from __future__ import annotations

import statistics

# Stages shown per framework, in table order, named as ours logs them (`timing_s/<stage>`; the weight sync is
# `update_weights`). A stage a framework does not have (TRL with `generate`: the weight sync) reads 0.
STAGES = ("step", "gen", "reward", "old_log_prob", "update_actor", "update_weights", "overhead")
# The work stages: everything else in a step is orchestration (controller, dispatch, reward, advantages, padding).
WORK_STAGES = ("gen", "old_log_prob", "ref", "update_actor", "update_weights")


def spread(values: list[float]) -> dict[str, float]:
    """{"median", "min", "max", "n"} of `values` (all 0 for an empty list)."""
    if not values:
        return {"median": 0.0, "min": 0.0, "max": 0.0, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def step_view(record: dict[str, float]) -> dict[str, float]:
    """One step's stages (s), token counts and rates from a framework's record.

    Overhead = step - (gen + old_log_prob + ref + update_actor + update_weights), as in scripts/bench_step.py.
    """
    t = {s: float(record.get(f"timing_s/{s}", 0.0)) for s in (*STAGES, "ref")}
    t["overhead"] = t["step"] - sum(t[s] for s in WORK_STAGES)
    tokens, response_tokens = float(record["perf/total_num_tokens"]), float(record["perf/response_tokens"])
    t["tokens"], t["response_tokens"] = tokens, response_tokens
    t["tokens_per_s"] = tokens / t["step"] if t["step"] > 0 else 0.0
    t["gen_tokens_per_s"] = response_tokens / t["gen"] if t["gen"] > 0 else 0.0
    t["score"] = float(record.get("critic/score/mean", 0.0))
    return t


def summarize(records: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per key of `step_view`: the spread over the measured steps (warm-up steps already removed)."""
    views = [step_view(r) for r in records]
    keys = views[0].keys() if views else ()
    return {k: spread([v[k] for v in views]) for k in keys}


def ratios(ours: dict[str, dict[str, float]], trl: dict[str, dict[str, float]]) -> dict[str, float]:
    """ours / TRL of each stage's median, and of the best (minimum) step times."""
    out = {s: ours[s]["median"] / trl[s]["median"] for s in STAGES if trl[s]["median"] > 0}
    if trl["step"]["min"] > 0:
        out["step_best_vs_best"] = ours["step"]["min"] / trl["step"]["min"]
    return out


def floor_seconds(num_params: int, tokens: float, peak_gflops: float, vllm_seconds: float) -> dict[str, float]:
    """The physical floor of one step: training FLOPs (6 x params x real tokens) at the GEMM peak, plus vLLM alone.

    Attention score FLOPs and the old-log-prob forward are left out: the floor is what no framework can beat.
    """
    train_s = 6 * num_params * tokens / (peak_gflops * 1e9)
    return {"train_s": train_s, "gen_s": vllm_seconds, "step_s": train_s + vllm_seconds}


def format_table(summaries: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown table: one row per stage/metric, one column per framework, `median [min, max]`."""
    names = list(summaries)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    rows = [(f"{s} (s)", s, "{:.3f}") for s in STAGES] + [
        ("real tokens / step", "tokens", "{:.0f}"),
        ("response tokens / step", "response_tokens", "{:.0f}"),
        ("tokens/s (step)", "tokens_per_s", "{:.1f}"),
        ("generation tokens/s", "gen_tokens_per_s", "{:.1f}"),
        ("reward mean", "score", "{:.3f}"),
    ]
    for label, key, fmt in rows:
        cells = []
        for name in names:
            s = summaries[name].get(key)
            cells.append(
                "-" if s is None else f"{fmt.format(s['median'])} [{fmt.format(s['min'])}, {fmt.format(s['max'])}]"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
