"""Experiment tracking: console lines, a tqdm bar, wandb (offline without credentials) and a metrics.jsonl file.

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
from typing import TYPE_CHECKING, Any

# wandb is imported where it is used: it takes ~1 s, and most runs (every test's) log without it.
if TYPE_CHECKING:
    from wandb.sdk.lib import wbauth

logger = logging.getLogger(__name__)

# Stands in for a wandb API key wherever the key would otherwise be written (the config sent to wandb).
REDACTED = "<redacted>"
_has_said_offline = False  # the "no credentials: offline" notice is given once per process

# The handful of metrics worth a console line every step; everything else goes to wandb / jsonl.
CONSOLE_KEYS = (
    "critic/score/mean",
    "train/loss",
    "val/loss",
    "val-core/*/acc/mean@1",
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
        self.last_jsonl_step: int | None = None  # the last step with a row in a resumed run's metrics.jsonl
        if "wandb" in self.backends:
            import wandb  # noqa: PLC0415

            run_dir.mkdir(parents=True, exist_ok=True)
            mode = wandb_mode_override()
            if mode == "offline":
                _say_offline_once(run_dir)
            self.wandb_run = wandb.init(
                project=project,
                name=experiment,
                dir=str(run_dir),
                config=redact_secrets(
                    config, _known_api_keys()
                ),  # the key never goes to wandb, even if a config holds it
                resume="allow",
                id=_wandb_run_id(run_dir, continue_run=resume_step is not None),
                mode=mode,
            )
            logger.info(
                "wandb run %s in %s mode, files in %s",
                self.wandb_run.id,
                self.wandb_run.settings.mode,
                self.wandb_run.dir,
            )
        if "jsonl" in self.backends:
            run_dir.mkdir(parents=True, exist_ok=True)
            path = run_dir / "metrics.jsonl"
            if resume_step is not None and path.exists():
                self.last_jsonl_step = _truncate_after(path, resume_step)
            elif path.exists():  # a fresh start in a used run directory: keep the old metrics beside it
                archived = path.with_name(f"metrics.{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
                path.rename(archived)
                logger.info("previous metrics.jsonl moved to %s", archived)
            self.jsonl = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in finish)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if "console" in self.backends and any(_wanted(k) for k in metrics):
            logger.info(format_console_line(step, metrics))
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)
        if self.jsonl is not None:
            clean = {
                k: (v if not (isinstance(v, float) and not math.isfinite(v)) else str(v)) for k, v in metrics.items()
            }
            self.jsonl.write(json.dumps({"step": step, **clean}) + "\n")
            self.jsonl.flush()
            self.last_jsonl_step = step

    def restore_row(self, metrics: dict[str, float], step: int) -> None:
        """Log the resumed checkpoint's own step row if this run's metrics.jsonl lacks it (the run died between the
        save and the log); a run resumed into a new directory from another's checkpoint starts its rows after it."""
        if self.jsonl is not None and self.last_jsonl_step is not None and self.last_jsonl_step < step:
            logger.info("metrics row of step %d restored from its checkpoint", step)
            self.log(metrics, step)

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """A table of examples (prompt, response, score) for wandb; the console gets the first row."""
        if self.wandb_run is not None:
            import wandb  # noqa: PLC0415

            self.wandb_run.log({name: wandb.Table(columns=columns, data=rows)}, step=step)
        if rows and "console" in self.backends:
            logger.info("%s example: %s", name, dict(zip(columns, rows[0], strict=True)))

    def finish(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
        if self.jsonl is not None:
            self.jsonl.close()


def wandb_credentials() -> wbauth.Auth | None:
    """The credentials wandb would use, found its own way, or None: WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE, the
    netrc entry `wandb login` writes for the configured host (WANDB_BASE_URL), or an earlier wandb.login() here.

    Nothing here reaches the network or prompts.

    Raises:
        ValueError: credentials exist but are malformed (a WANDB_API_KEY of the wrong length, say); the message
            says what is wrong, never the key.
    """
    from wandb.errors import AuthenticationError  # noqa: PLC0415
    from wandb.sdk import wandb_setup  # noqa: PLC0415
    from wandb.sdk.lib import wbauth  # noqa: PLC0415

    settings = wandb_setup.singleton().settings
    try:
        return wbauth.authenticate_session(
            host=settings.base_url, source="rlhf tracker", prompt=False, update_session=False
        )
    except AuthenticationError as e:
        raise ValueError(
            f"wandb credentials are malformed: {e} Fix WANDB_API_KEY or run `wandb login --relogin`; "
            "WANDB_MODE=offline logs without them"
        ) from None  # not `from e`: keep wandb's internals (which hold the key) out of the traceback


def wandb_mode_override() -> str | None:
    """The mode to force on wandb.init: "offline" when no mode was chosen and wandb finds no credentials, else None.

    None leaves the choice to wandb's own resolution: WANDB_MODE, a mode saved by `wandb offline`, and the
    credentials (wandb_credentials()). Call it at start-up to fail early on malformed credentials.

    Raises:
        ValueError: no mode was chosen and the credentials are malformed (see wandb_credentials).
    """
    if "WANDB_MODE" in os.environ:  # the user chose; wandb reads it
        return None
    from wandb.sdk import wandb_setup  # noqa: PLC0415

    if wandb_setup.singleton().settings.mode in ("offline", "dryrun", "disabled"):  # `wandb offline`: no key needed
        return None
    return None if wandb_credentials() is not None else "offline"


def _known_api_keys() -> list[str]:
    """Every API key this process could send to wandb: the one in WANDB_API_KEY and the one wandb resolves."""
    from wandb.sdk.lib import wbauth  # noqa: PLC0415

    keys = [os.environ.get("WANDB_API_KEY", "")]
    try:
        credentials = wandb_credentials()
    except ValueError:  # malformed: WANDB_API_KEY (listed above) is the only source wandb rejects by format
        credentials = None
    if isinstance(credentials, wbauth.AuthApiKey):
        keys.append(credentials.api_key)
    return [key for key in keys if key]


def _say_offline_once(run_dir: Path) -> None:
    global _has_said_offline
    if not _has_said_offline:
        _has_said_offline = True
        logger.warning(
            "wandb: no credentials (WANDB_API_KEY or `wandb login`), so the run is logged offline under %s; "
            "`wandb sync %s/wandb/offline-run-*` uploads it later (set WANDB_MODE to choose the mode yourself)",
            run_dir,
            run_dir,
        )


def redact_secrets(config: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
    """A copy of config where every string that contains one of the secrets reads REDACTED."""
    if not secrets:
        return config

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            return REDACTED if any(secret in value for secret in secrets) else value
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(scrub(v) for v in value)
        return value

    return scrub(config)


def _wandb_run_id(run_dir: Path, continue_run: bool) -> str:
    """The run directory's wandb id when continuing a run (so wandb continues it too), else a fresh one."""
    id_file = run_dir / "wandb_run_id"
    if continue_run and id_file.exists():
        return id_file.read_text().strip()
    run_id = uuid.uuid4().hex[:8]
    id_file.write_text(run_id)
    return run_id


def _truncate_after(path: Path, step: int) -> int:
    """Keep the rows of steps <= `step` (a killed run may have logged steps that its checkpoint does not hold);
    returns the last kept step (0 when none)."""
    rows = [(line, json.loads(line)["step"]) for line in path.read_text().splitlines() if line.strip()]
    kept = [(line, s) for line, s in rows if s <= step]
    path.write_text("".join(line + "\n" for line, _ in kept))
    return max((s for _, s in kept), default=0)
