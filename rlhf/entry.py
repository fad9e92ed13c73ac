"""What both entry points (`rlhf.main`, `rlhf.sft_main`) do around their trainer, written once.

    prepare_run   validate (before any heavy import), build the tiny model if asked, pick and fill the run dir
    run_trainer   setup -> fit -> cleanup, restarting from the last checkpoint after a worker dies, curves at the end

Under Hydra, each invocation keeps its own `.hydra/` and `main.log` in a time-stamped folder of the run dir (a failed
invocation never overwrites a good run's), and each job of a sweep (`-m`) gets its own run dir under the sweep dir.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from rlhf.config import TrainerConfig, to_yaml
from rlhf.logs import configure_logging
from rlhf.models.tiny import build_tiny_model
from rlhf.plotting import plot_run, summarize_run
from rlhf.schema import ConfigError
from rlhf.tracking import wandb_mode_override

logger = logging.getLogger(__name__)

# The Hydra config root, as an absolute path: `python -m rlhf.main` and the console scripts find it the same way.
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


class Trainer(Protocol):
    def setup(self) -> None: ...
    def fit(self) -> dict[str, float]: ...
    def cleanup(self) -> None: ...


def hydra_sweep_job_dir() -> Path | None:
    """Hydra's output folder of this job when it is one job of a sweep (`-m`); None otherwise."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return Path(hydra_cfg.runtime.output_dir).resolve()


def prepare_run(cfg: Any, validate: Callable[[Any], None], run_dir: Path | None = None) -> Path:
    """Validate `cfg`, build the tiny model if `model.build_tiny`, create the run dir and save the resolved config.

    Args:
        run_dir: where the run writes; None: a sweep job's own folder under Hydra, else `trainer.run_dir()`.

    Returns:
        The run directory (absolute).

    Raises:
        ValueError: from `validate`, naming the config key (nothing has been written yet).
    """
    validate(cfg)
    trainer: TrainerConfig = cfg.trainer
    if "wandb" in trainer.logger:
        try:  # a malformed key fails now, in seconds, not when the tracker starts after Ray and the models
            wandb_mode_override()
        except ValueError as e:
            raise ConfigError(f"trainer.logger includes wandb: {e}") from e
    configure_logging(trainer.log_level)
    absolute_local_paths(cfg)
    if cfg.model.build_tiny:
        build_tiny_model(cfg.model.path)
    run_dir = run_dir or hydra_sweep_job_dir() or trainer.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    return run_dir


def absolute_local_paths(cfg: Any) -> None:
    """Relative paths that exist here (model, reward and critic models, data files, built-in data dir) become
    absolute, in place.

    Workers do not share the driver's working directory (a Ray job's workers run in its uploaded copy, which leaves
    models/ and data/ out), so `model.path=models/x` must reach them as the path the driver validated. A Hugging Face
    hub id, which is no local path, is left as it is.
    """

    def absolute(path: str | None, create: bool = False) -> str | None:
        if path is None or Path(path).is_absolute() or not (create or Path(path).exists()):
            return path
        return os.path.abspath(path)  # (symlinks kept: the user named this path)

    cfg.model.path = absolute(cfg.model.path, create=cfg.model.build_tiny)
    for section in ("reward", "critic"):  # RL only
        if hasattr(cfg, section):
            getattr(cfg, section).model_path = absolute(getattr(cfg, section).model_path)
    cfg.data.builtin_dir = absolute(cfg.data.builtin_dir, create=True)
    cfg.data.train_files = [absolute(f) for f in cfg.data.train_files]
    cfg.data.val_files = [absolute(f) for f in cfg.data.val_files]


def exit_on_config_error(run: Callable[[], object]) -> None:
    """Run the job; a ConfigError (bad key, value, path or data file) prints its message alone and exits with 2."""
    try:
        run()
    except ConfigError as e:
        logger.error("config error: %s", e)
        raise SystemExit(2) from None


def run_trainer(
    make_trainer: Callable[[str], Trainer], resume: str, max_restarts: int, run_dir: Path
) -> dict[str, float]:
    """setup -> fit -> cleanup; after a worker dies or a weight sync fails, restart from the newest checkpoint, up
    to `max_restarts` times.

    Args:
        make_trainer: builds a fresh trainer for a resume mode (`trainer.resume`, then "auto" after a restart).

    Returns:
        The last step's metrics.
    """
    # Imported here on purpose: it pulls in Ray (~2 s), and a config error must be reported before that.
    from rlhf.workers.group import WorkerDiedError  # noqa: PLC0415
    from rlhf.workers.weight_transfer import WeightSyncError  # noqa: PLC0415

    for attempt in range(max_restarts + 1):
        trainer = make_trainer(resume)
        try:
            trainer.setup()
            metrics = trainer.fit()
            if (run_dir / "metrics.jsonl").exists():
                logger.info("curves: %s\n%s", plot_run(run_dir), summarize_run(run_dir))
            return metrics
        except (WorkerDiedError, WeightSyncError):  # a sync fails when either side dies or hangs
            if attempt == max_restarts:
                raise
            logger.exception(
                "a worker died or a weight sync failed; restarting the worker groups from the last checkpoint "
                "(restart %d of trainer.max_restarts=%d)",
                attempt + 1,
                max_restarts,
            )
            resume = "auto"
        finally:
            trainer.cleanup()
    raise AssertionError("unreachable: the last attempt returns or raises")
