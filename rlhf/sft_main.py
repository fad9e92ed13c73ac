"""Hydra entry point of supervised fine-tuning.

    python -m rlhf.sft_main --config-name sft_arith_tiny sft.total_steps=100 optim.lr=1e-3
    python -m rlhf.sft_main --config-name sft_arith_tiny --cfg job      # print the resolved config

The config is composed from `recipes/` over the `sft_schema` dataclasses (unknown keys fail), validated
(`rlhf.sft_config.validate_sft`) before any worker starts, then `SFTTrainer` runs and writes
`<output_dir>/<project>/<experiment>/final_model`, which an RL run takes as `model.path`.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from rlhf.models.tiny import build_tiny_model
from rlhf.sft_config import SFTConfig, register_sft_schema, to_typed_sft, validate_sft

logger = logging.getLogger("rlhf")

register_sft_schema()


def run(cfg: SFTConfig) -> dict[str, float]:
    """Validate, build the tiny model if asked, fine-tune; returns the last step's metrics."""
    validate_sft(cfg)
    if cfg.model.build_tiny:
        build_tiny_model(cfg.model.path)
    run_dir = cfg.trainer.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    # Imported after validation on purpose: the trainer pulls in Ray and DeepSpeed, and a config error must be
    # reported before any of that.
    from rlhf.sft_trainer import SFTTrainer  # noqa: PLC0415

    trainer = SFTTrainer(cfg, run_dir)
    try:
        trainer.setup()
        return trainer.fit()
    finally:
        trainer.cleanup()


@hydra.main(config_path="../recipes", config_name="sft_arith_tiny", version_base=None)
def main(dict_cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    run(to_typed_sft(dict_cfg))


if __name__ == "__main__":
    main()
