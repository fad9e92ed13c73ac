"""Composing the SFT recipes into the typed schema, as `python -m rlhf.sft_main` does (shared by these tests)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from rlhf.sft_config import SFTConfig, register_sft_schema, to_typed_sft

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def compose_sft(name: str = "sft_arith_tiny", overrides: list[str] | None = None) -> SFTConfig:
    register_sft_schema()
    with initialize_config_dir(config_dir=str(RECIPES), version_base=None):
        return to_typed_sft(compose(config_name=name, overrides=overrides or []))
