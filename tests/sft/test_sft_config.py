"""The SFT schema: every sft_* recipe composes, and bad values fail before any worker starts, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from sft_recipes import RECIPES, compose_sft

from rlhf.sft_config import SFTConfig, validate_sft


def tiny(tiny_model_dir: Path, *overrides: str) -> SFTConfig:
    return compose_sft("sft_arith_tiny", [f"model.path={tiny_model_dir}", "model.build_tiny=false", *overrides])


def test_every_sft_recipe_composes_and_validates(tiny_model_dir: Path) -> None:
    recipes = sorted(RECIPES.glob("sft_*.yaml"))
    assert recipes, "no sft_*.yaml recipe found"
    for recipe in recipes:
        cfg = compose_sft(recipe.stem, [f"model.path={tiny_model_dir}", "model.build_tiny=false"])
        validate_sft(cfg)


def test_recipe_starts_with_the_command_that_runs_it() -> None:
    first_lines = (RECIPES / "sft_arith_tiny.yaml").read_text().splitlines()[:3]
    assert any("python -m rlhf.sft_main --config-name sft_arith_tiny" in line for line in first_lines)


def test_unknown_key_is_rejected_at_compose() -> None:
    with pytest.raises(ConfigCompositionException):
        compose_sft("sft_arith_tiny", ["sft.no_such_key=1"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.total_steps=5"], "trainer.total_steps=5 is not used by SFT; set sft.total_steps instead"),
        (["data.train_batch_size=16"], "set sft.batch_size instead"),
        (["sft.total_steps=0"], "sft.total_steps=0 must be >= 1"),
        (["sft.batch_size=63"], "sft.batch_size=63 must be a positive multiple of the 2 ranks"),
        (["sft.micro_batch_size_per_device=5"], "sft.micro_batch_size_per_device=5 must divide the 32 sequences"),
        (["sft.max_length=1000"], "sft.max_length=1000 exceeds the model's context of 256 tokens"),
        (["sft.offload_params=true"], "sft.offload_params=true needs sft.zero_stage=3 (got sft.zero_stage=1)"),
        (["sft.zero_stage=0", "sft.offload_optimizer=true"], "sft.offload_optimizer=true needs sft.zero_stage >= 1"),
        (["trainer.nnodes=2"], "trainer.nnodes=2 needs a Ray cluster with that many nodes"),
        (["sft.kernel_backend=cuda"], "sft.kernel_backend='cuda' is not valid; choose from"),
        (["optim.lr=0"], "optim.lr=0.0 must be > 0"),
        (["trainer.logger=[console,tensorboard]"], "trainer.logger has an unknown value 'tensorboard'"),
        (["trainer.val_num_samples=4"], "trainer.val_num_samples=4 is not used by SFT"),
    ],
)
def test_bad_values_name_the_key(tiny_model_dir: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        validate_sft(tiny(tiny_model_dir, *overrides))
    assert message in str(err.value)


def test_missing_model_and_data_name_the_key(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="model.path="):
        validate_sft(compose_sft("sft_arith_tiny", [f"model.path={tmp_path / 'none'}", "model.build_tiny=false"]))
    with pytest.raises(ValueError, match="data.train_files: file"):
        validate_sft(tiny(tiny_model_dir, f"data.train_files=[{tmp_path / 'missing.parquet'}]"))
