"""Experiment tracking: console lines, a tqdm bar, wandb (offline without an API key) and a metrics.jsonl file.

Metric names follow verl's conventions (`section/name`), so dashboards users already have keep working.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

import wandb

logger = logging.getLogger(__name__)

# The handful of metrics worth a console line every step; everything else goes to wandb / jsonl.
CONSOLE_KEYS = (
    "critic/score/mean",
    "train/loss",
    "val/loss",
    "val/*/acc/mean@1",
    "actor/pg_loss",
    "actor/entropy",
    "actor/kl_loss",
    "actor/grad_norm",
    "response_length/mean",
    "rollout/logprob_diff_max",
    "timing_s/step",
    "perf/throughput",
)


def _wanted(key: str) -> bool:
    for pattern in CONSOLE_KEYS:
        head, _, tail = pattern.partition("*")
        if key == pattern or (tail and key.startswith(head) and key.endswith(tail)):
            return True
    return False


def format_console_line(step: int, metrics: dict[str, float]) -> str:
    parts = [f"step {step}"]
    for key in sorted(k for k in metrics if _wanted(k)):
        value = metrics[key]
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " | ".join(parts)


class Tracker:
    """Fan metrics out to the configured backends."""

    def __init__(
        self,
        backends: list[str],
        project: str,
        experiment: str,
        run_dir: Path,
        config: dict[str, Any],
        resume_step: int | None = None,
    ) -> None:
        """`resume_step`: the run continues from this step's checkpoint; later rows of metrics.jsonl are dropped."""
        self.backends, self.run_dir = list(backends), run_dir
        self.wandb_run = None
        self.jsonl = None
        if "wandb" in self.backends:
            if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
                os.environ["WANDB_MODE"] = "offline"  # no key: keep the run locally, `wandb sync` uploads it later
            run_dir.mkdir(parents=True, exist_ok=True)
            self.wandb_run = wandb.init(
                project=project,
                name=experiment,
                dir=str(run_dir),
                config=config,
                resume="allow",
                id=_wandb_run_id(run_dir, continue_run=resume_step is not None),
            )
            logger.info(
                "wandb run %s in %s mode, files in %s",
                self.wandb_run.id,
                os.environ.get("WANDB_MODE", "online"),
                self.wandb_run.dir,
            )
        if "jsonl" in self.backends:
            run_dir.mkdir(parents=True, exist_ok=True)
            path = run_dir / "metrics.jsonl"
            if resume_step is not None and path.exists():
                _truncate_after(path, resume_step)
            elif path.exists():  # a fresh start in a used run directory: keep the old metrics beside it
                archived = path.with_name(f"metrics.{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
                path.rename(archived)
                logger.info("previous metrics.jsonl moved to %s", archived)
            self.jsonl = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in finish)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if "console" in self.backends:
            logger.info(format_console_line(step, metrics))
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)
        if self.jsonl is not None:
            clean = {
                k: (v if not (isinstance(v, float) and not math.isfinite(v)) else str(v)) for k, v in metrics.items()
            }
            self.jsonl.write(json.dumps({"step": step, **clean}) + "\n")
            self.jsonl.flush()

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """A table of examples (prompt, response, score) for wandb; the console gets the first row."""
        if self.wandb_run is not None:
            self.wandb_run.log({name: wandb.Table(columns=columns, data=rows)}, step=step)
        if rows and "console" in self.backends:
            logger.info("%s example: %s", name, dict(zip(columns, rows[0], strict=True)))

    def finish(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
        if self.jsonl is not None:
            self.jsonl.close()


def _wandb_run_id(run_dir: Path, continue_run: bool) -> str:
    """The run directory's wandb id when continuing a run (so wandb continues it too), else a fresh one."""
    id_file = run_dir / "wandb_run_id"
    if continue_run and id_file.exists():
        return id_file.read_text().strip()
    run_id = uuid.uuid4().hex[:8]
    id_file.write_text(run_id)
    return run_id


def _truncate_after(path: Path, step: int) -> None:
    """Keep the rows of steps <= `step`: a killed run may have logged steps that its checkpoint does not hold."""
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))
