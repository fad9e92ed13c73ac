"""Curves and summary from a synthetic metrics.jsonl."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.plotting import plot_run, read_metrics, series, summarize_run

ROOT = Path(__file__).resolve().parents[2]


def write_metrics(run_dir: Path) -> None:
    rows = []
    for step in range(1, 21):
        row = {
            "step": step,
            "critic/score/mean": step / 20,
            "response_length/mean": 4.0,
            "actor/entropy": 1 / step,
            "timing_s/step": 0.5,
            "perf/throughput": 100.0 + step,
            "actor/kl_loss": "nan",
        }
        if step % 10 == 0:
            row["val-core/arith/acc/mean@1"] = 0.2 if step == 10 else 0.6
            row["val-core/arith/acc/mean@4"] = 0.1 if step == 10 else 0.5
            row["val-core/arith/acc/best@4/mean"] = 0.9
        rows.append(json.dumps(row))
    (run_dir / "metrics.jsonl").write_text("\n".join(rows) + "\n{truncated")


def test_series_match_fnmatch_patterns(tmp_path: Path) -> None:
    """The validation panel's pattern takes greedy and sampled accuracy (mean@1, mean@4), not best@4."""
    write_metrics(tmp_path)
    found = series(read_metrics(tmp_path), "val-core/*/acc/mean@*")
    assert sorted(found) == ["val-core/arith/acc/mean@1", "val-core/arith/acc/mean@4"]
    assert found["val-core/arith/acc/mean@4"].steps == [10, 20] and found["val-core/arith/acc/mean@4"].values == [
        0.1,
        0.5,
    ]


def test_plot_writes_a_png_and_skips_missing_metrics(tmp_path: Path) -> None:
    write_metrics(tmp_path)
    out = plot_run(tmp_path)
    assert out == tmp_path / "curves.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(read_metrics(tmp_path)) == 20  # the cut-off last line is skipped


def test_summary_reports_accuracy_wall_time_and_throughput(tmp_path: Path) -> None:
    write_metrics(tmp_path)
    summary = summarize_run(tmp_path)
    assert "val-core/arith/acc/mean@1: 0.200 at step 10 -> 0.600 at step 20 (+40.0 points)" in summary
    assert "wall time in steps: 10.0 s" in summary
    assert "mean perf/throughput: 110.5" in summary


def test_no_metrics_file_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="trainer.logger"):
        plot_run(tmp_path)


def test_cli_redraws(tmp_path: Path) -> None:
    write_metrics(tmp_path)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/plot_run.py"), str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "curves.png").is_file()
    assert "+40.0 points" in result.stderr
