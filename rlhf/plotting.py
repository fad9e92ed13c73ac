"""Curves and a short summary of a finished run, read back from its `metrics.jsonl`.

    python scripts/plot_run.py outputs/rlhf/grpo_arith_tiny        # writes curves.png there, prints the summary

Only matplotlib's Agg backend is used (no display needed). Metrics a run did not log are skipped.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

# (panel title, metric keys or fnmatch patterns); every key a panel's patterns match is drawn in it.
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("train reward (critic/score/mean)", ("critic/score/mean",)),
    ("validation accuracy (greedy mean@1, sampled mean@k)", ("val-core/*/acc/mean@*",)),
    ("response length (mean)", ("response_length/mean",)),
    ("KL", ("actor/kl_loss", "actor/reward_kl_penalty")),
    ("entropy", ("actor/entropy",)),
    ("SFT loss", ("train/loss", "val/loss")),
    ("agent: turns and tool calls per episode", ("agent/num_turns/mean", "agent/tool_calls/mean")),
)


@dataclass
class Series:
    """One metric over steps (non-finite values dropped)."""

    steps: list[int]
    values: list[float]


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of `<run_dir>/metrics.jsonl` (each has "step"); unreadable lines are skipped.

    Raises:
        FileNotFoundError: the run directory has no metrics.jsonl (was `jsonl` in trainer.logger?).
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run with trainer.logger=[console,jsonl] to write it")
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def series(rows: list[dict[str, float]], pattern: str) -> dict[str, Series]:
    """Every metric matching `pattern` (an exact key or an fnmatch pattern), as finite (step, value) series, by key."""
    out: dict[str, Series] = defaultdict(lambda: Series([], []))
    for row in rows:
        for key, value in row.items():
            if fnmatchcase(key, pattern) and isinstance(value, (int, float)) and math.isfinite(value):
                out[key].steps.append(int(row["step"]))
                out[key].values.append(float(value))
    return dict(out)


def plot_run(run_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Draw the main curves of a run into a PNG (default `<run_dir>/curves.png`); returns its path.

    Raises:
        FileNotFoundError: no metrics.jsonl; ValueError: none of the main metrics was logged.
    """
    rows = read_metrics(run_dir)
    panels = []
    for title, patterns in PANELS:
        found = {key: s for pattern in patterns for key, s in series(rows, pattern).items()}
        if found:
            panels.append((title, found))
    if not panels:
        raise ValueError(f"{run_dir}/metrics.jsonl has none of the main metrics {[p for _, ps in PANELS for p in ps]}")
    # matplotlib is imported here, at the end of a run, not with the module: it takes ~0.5 s of every driver's start.
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")  # files only: plotting must work on a headless node
    import matplotlib.pyplot as plt  # noqa: PLC0415

    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.4 * nrows), squeeze=False)
    for ax, (title, found) in zip(list(axes.flat)[: len(panels)], panels, strict=True):
        for key, s in found.items():
            ax.plot(s.steps, s.values, marker="o" if len(s.steps) < 30 else None, markersize=3, label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(str(Path(run_dir).name), fontsize=11)
    fig.tight_layout()
    out = Path(out_path) if out_path is not None else Path(run_dir) / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def summarize_run(run_dir: str | Path) -> str:
    """A few lines: steps, validation accuracy at the first and last validation, wall time, mean throughput."""
    rows = read_metrics(run_dir)
    lines = [f"run {run_dir}: {len(rows)} logged steps (last step {rows[-1]['step'] if rows else 0})"]
    for key, s in sorted(series(rows, "val-core/*/acc/mean@1").items()):
        lines.append(
            f"{key}: {s.values[0]:.3f} at step {s.steps[0]} -> {s.values[-1]:.3f} at step {s.steps[-1]} "
            f"({100 * (s.values[-1] - s.values[0]):+.1f} points)"
        )
    step_times = series(rows, "timing_s/step").get("timing_s/step")
    if step_times is not None:
        total = sum(step_times.values)
        lines.append(f"wall time in steps: {total:.1f} s ({total / len(step_times.values):.3f} s/step)")
    throughput = series(rows, "perf/throughput").get("perf/throughput")
    if throughput is not None:
        lines.append(f"mean perf/throughput: {sum(throughput.values) / len(throughput.values):.1f} tokens/s/device")
    return "\n".join(lines)


def last_value(run_dir: str | Path, pattern: str) -> dict[str, float]:
    """The last logged value of every metric matching `pattern` (e.g. "val-core/*/acc/mean@1")."""
    return {key: s.values[-1] for key, s in series(read_metrics(run_dir), pattern).items()}


def pipeline_summary(sft_dir: str | Path, rl_dir: str | Path) -> str:
    """Both runs' summaries and the RL lift: the SFT model's final accuracy is where RL starts."""
    lines = [summarize_run(sft_dir), "", summarize_run(rl_dir), ""]
    before, after = last_value(sft_dir, "val-core/*/acc/mean@1"), last_value(rl_dir, "val-core/*/acc/mean@1")
    for key in sorted(before.keys() & after.keys()):
        lines.append(
            f"{key}: SFT {before[key]:.3f} -> RL {after[key]:.3f} "
            f"({100 * (after[key] - before[key]):+.1f} points from RL)"
        )
    return "\n".join(lines)
