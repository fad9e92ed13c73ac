"""Compose a recipe from `recipes/` into the typed config, as `python -m rlhf.main` does."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from rlhf.config import RLHFConfig, register_schema, to_typed

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def compose_recipe(name: str, overrides: list[str] | None = None) -> RLHFConfig:
    register_schema()
    with initialize_config_dir(config_dir=str(RECIPES), version_base=None):
        return to_typed(compose(config_name=name, overrides=overrides or []))
