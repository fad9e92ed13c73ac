"""Hydra entry point.

    python -m rlhf.main --config-name grpo_arith_tiny trainer.total_steps=5 actor.optim.lr=2e-5
    python -m rlhf.main --config-name grpo_arith_tiny --cfg job      # print the resolved config

The config is composed from `recipes/`, checked against the typed schema (unknown keys fail), validated
(`rlhf.config.validate`) in the driver before any worker starts, then the trainer runs.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from rlhf.config import RLHFConfig, register_schema, to_typed, validate
from rlhf.models.tiny import build_tiny_model
from rlhf.plotting import plot_run, summarize_run

logger = logging.getLogger("rlhf")

register_schema()


def run(cfg: RLHFConfig) -> dict[str, float]:
    """Validate, build what is missing (the tiny model), train; returns the last step's metrics."""
    validate(cfg)
    if cfg.model.build_tiny:
        build_tiny_model(cfg.model.path)
    run_dir = cfg.trainer.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    # Imported after validation on purpose: the trainer pulls in Ray, vLLM and DeepSpeed (~6 s), and a config
    # error must be reported before any of that (contract 3).
    from rlhf.trainer import RLTrainer  # noqa: PLC0415
    from rlhf.workers.group import WorkerDiedError  # noqa: PLC0415

    resume = cfg.trainer.resume
    for attempt in range(cfg.trainer.max_restarts + 1):
        trainer = RLTrainer(cfg, run_dir, resume)
        try:
            trainer.setup()
            metrics = trainer.fit()
            if (run_dir / "metrics.jsonl").exists():
                logger.info("curves: %s\n%s", plot_run(run_dir), summarize_run(run_dir))
            return metrics
        except WorkerDiedError:
            if attempt == cfg.trainer.max_restarts:
                raise
            logger.exception(
                "a worker died; restarting the worker groups from the last checkpoint "
                "(restart %d of trainer.max_restarts=%d)",
                attempt + 1,
                cfg.trainer.max_restarts,
            )
            resume = "auto"
        finally:
            trainer.cleanup()
    raise AssertionError("unreachable: the last attempt returns or raises")


@hydra.main(config_path="../recipes", config_name="grpo_arith_tiny", version_base=None)
def main(dict_cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    run(to_typed(dict_cfg))


if __name__ == "__main__":
    main()
