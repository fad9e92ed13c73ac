"""Hydra entry point of RL training.

    python -m rlhf.main --config-name grpo_arith_tiny trainer.total_steps=5 actor.optim.lr=2e-5
    python -m rlhf.main --config-name grpo_arith_tiny --cfg job      # print the resolved config
    python -m rlhf.main --config-name grpo_arith_tiny -m actor.optim.lr=1e-4,2e-4   # a sweep: one run dir per job
    rlhf-train --config-name grpo_arith_tiny                        # the same, as a console script

The config is composed from `recipes/`, checked against the typed schema (unknown keys fail), validated
(`rlhf.config_checks.validate`) in the driver before any worker starts, then the trainer runs (`rlhf.entry`).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from rlhf.config import RLHFConfig, register_schema, to_typed
from rlhf.config_checks import validate
from rlhf.entry import RECIPES, exit_on_config_error, prepare_run, run_trainer

register_schema()


def run(cfg: RLHFConfig, run_dir: Path | None = None) -> dict[str, float]:
    """Validate, build what is missing (the tiny model), train; returns the last step's metrics."""
    run_dir = prepare_run(cfg, validate, run_dir)
    # Imported after validation on purpose: the trainer pulls in Ray, vLLM and DeepSpeed (~6 s), and a config
    # error must be reported before any of that (contract 3).
    from rlhf.trainer import RLTrainer  # noqa: PLC0415

    return run_trainer(
        lambda resume: RLTrainer(cfg, run_dir, resume), cfg.trainer.resume, cfg.trainer.max_restarts, run_dir
    )


@hydra.main(config_path=str(RECIPES), config_name="grpo_arith_tiny", version_base=None)
def main(dict_cfg: DictConfig) -> None:
    exit_on_config_error(lambda: run(to_typed(dict_cfg)))


if __name__ == "__main__":
    main()
