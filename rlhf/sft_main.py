"""Hydra entry point of supervised fine-tuning.

    python -m rlhf.sft_main --config-name sft_arith_tiny sft.total_steps=100 optim.lr=1e-3
    python -m rlhf.sft_main --config-name sft_arith_tiny --cfg job      # print the resolved config
    rlhf-sft --config-name sft_arith_tiny                              # the same, as a console script

The config is composed from `recipes/` over the `sft_schema` dataclasses (unknown keys fail), validated
(`rlhf.sft_config.validate_sft`) before any worker starts, then `SFTTrainer` runs (`rlhf.entry`) and writes
`<output_dir>/<project>/<experiment>/final_model`, which an RL run takes as `model.path`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from rlhf.entry import RECIPES, exit_on_config_error, prepare_run, run_trainer
from rlhf.sft_config import SFTConfig, register_sft_schema, to_typed_sft, validate_sft

register_sft_schema()


def run(cfg: SFTConfig, run_dir: Path | None = None) -> dict[str, float]:
    """Validate, build the tiny model if asked, fine-tune; returns the last step's metrics."""
    run_dir = prepare_run(cfg, validate_sft, run_dir)
    # Imported after validation on purpose: the trainer pulls in Ray and DeepSpeed, and a config error must be
    # reported before any of that.
    from rlhf.sft_trainer import SFTTrainer  # noqa: PLC0415

    return run_trainer(
        lambda resume: SFTTrainer(cfg, run_dir, resume), cfg.trainer.resume, cfg.trainer.max_restarts, run_dir
    )


@hydra.main(config_path=str(RECIPES), config_name="sft_arith_tiny", version_base=None)
def main(dict_cfg: DictConfig) -> None:
    exit_on_config_error(lambda: run(to_typed_sft(dict_cfg)))


if __name__ == "__main__":
    main()
