"""The config schema walked field by field: every field documented, every domain declared and checked by name."""

from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path

import pytest

from recipes import compose_recipe
from rlhf.config import RLHFConfig
from rlhf.config_checks import validate
from rlhf.schema import ConfigError, Range, field_docs, literal_choices, unwrap, walk_fields
from rlhf.sft_config import SFT_READS, SFT_REFUSES, SFTConfig

SCHEMAS = [RLHFConfig, SFTConfig]


def all_leaf_fields() -> list[tuple[str, type, str, object]]:
    return [leaf for schema in SCHEMAS for leaf in walk_fields(schema)]


def all_classes(cls: type) -> set[type]:
    found = {cls}
    for f in dataclasses.fields(cls):
        bare = unwrap(typing.get_type_hints(cls, include_extras=True)[f.name]).bare
        if dataclasses.is_dataclass(bare):
            found |= all_classes(bare)
    return found


@pytest.mark.parametrize("cls", sorted({c for s in SCHEMAS for c in all_classes(s)}, key=lambda c: c.__name__))
def test_every_field_has_a_docstring(cls: type) -> None:
    missing = [f.name for f in dataclasses.fields(cls) if not field_docs(cls).get(f.name)]
    assert not missing, f"{cls.__name__} fields without a docstring under them: {missing}"


def test_every_number_declares_its_domain() -> None:
    """An int or float field must carry a Range (Range() says "any finite number") or be a Literal."""
    undeclared = []
    for key, _, _, hint in all_leaf_fields():
        ft = unwrap(hint)
        item = unwrap(typing.get_args(ft.bare)[0]) if typing.get_origin(ft.bare) is list else ft
        if item.bare in (int, float) and ft.range is None and item.range is None:
            undeclared.append(key)
    assert not undeclared, f"numeric fields without a Range: {undeclared}"


def test_every_literal_default_is_one_of_its_choices() -> None:
    for schema in SCHEMAS:
        defaults = schema()
        for key, _, _, hint in walk_fields(schema):
            ft = unwrap(hint)
            choices = literal_choices(ft.bare)
            if choices is None:
                continue
            value = defaults
            for part in key.split("."):
                value = getattr(value, part)
            assert value in choices or (value is None and ft.optional), f"{key} default {value!r} is not in {choices}"


def violating_value(rng: Range, bare: type) -> float:
    """A value just outside `rng` (of the field's type)."""
    if rng.gt is not None:
        return bare(rng.gt) if bare is float else int(rng.gt)
    if rng.ge is not None:
        return bare(rng.ge) - (1 if bare is int else 0.5)
    if rng.le is not None:
        return bare(rng.le) + (1 if bare is int else 0.5)
    if rng.lt is not None:
        return bare(rng.lt)
    return float("nan")


def set_key(cfg: object, key: str, value: object) -> None:
    *parents, last = key.split(".")
    for part in parents:
        cfg = getattr(cfg, part)
    setattr(cfg, last, value)


def test_every_constrained_rl_field_fails_validation_naming_its_key(tiny_model_dir: Path) -> None:
    """For each field with a Range or Literal, one value outside its domain fails validate() naming the key."""
    base = compose_recipe("grpo_arith_tiny", [f"model.path={tiny_model_dir}", "model.build_tiny=false"])
    validate(base)
    checked = 0
    for key, _, _, hint in walk_fields(RLHFConfig):
        ft = unwrap(hint)
        bare = ft.bare
        if typing.get_origin(bare) is list:
            item = unwrap(typing.get_args(bare)[0])
            if item.range is None and literal_choices(item.bare) is None:
                continue
            bad: object = [violating_value(item.range, item.bare)] if item.range else ["not-a-choice"]
        elif ft.range is not None:
            if bare is int and ft.range.describe() == "any finite number":
                continue  # every int is finite
            bad = violating_value(ft.range, bare)
        elif literal_choices(bare) is not None:
            bad = "not-a-choice" if isinstance(literal_choices(bare)[0], str) else 99
        else:
            continue
        cfg = copy.deepcopy(base)
        set_key(cfg, key, bad)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate(cfg)
        checked += 1
    assert checked > 50, checked


@pytest.mark.parametrize(
    "override",
    [
        "reward.num_workers=0",
        "actor.optim.lr=-1",
        "reward.timeout_s=-1",
        "rollout.gpu_memory_utilization=2.0",
        "data.val_batch_size=0",
        "actor.log_prob_micro_batch_size=0",
        "actor.optim.name=Adamw",
        "trainer.test_freq=-1",
        "trainer.total_steps=0",
        "trainer.experiment_name=../../x",
        "trainer.project_name=/abs/path",
    ],
)
def test_values_users_tripped_over_fail_before_any_worker(tiny_model_dir: Path, override: str) -> None:
    cfg = compose_recipe("grpo_arith_tiny", [f"model.path={tiny_model_dir}", "model.build_tiny=false", override])
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        validate(cfg)


def test_reward_function_is_resolved_in_the_driver(tiny_model_dir: Path, tmp_path: Path) -> None:
    for spec, message in (
        (f"{tmp_path / 'nope.py'}:fn", "does not exist"),
        (f"{Path(__file__)}:no_such_function", "has no attribute"),
    ):
        cfg = compose_recipe(
            "grpo_arith_tiny", [f"model.path={tiny_model_dir}", "model.build_tiny=false", f"reward.function={spec}"]
        )
        with pytest.raises(ConfigError, match=f"reward.function=.*{message}"):
            validate(cfg)


def test_a_single_data_file_string_is_accepted(tmp_path: Path) -> None:
    cfg = compose_recipe("grpo_arith_tiny", [f"data.train_files={tmp_path / 'a.parquet'}"])
    assert cfg.data.train_files == [str(tmp_path / "a.parquet")]


def test_sft_reads_or_refuses_every_shared_key() -> None:
    shared = [key for key, *_ in walk_fields(SFTConfig) if key.split(".")[0] in ("model", "data", "trainer")]
    undecided = [k for k in shared if (k in SFT_READS) == (k in SFT_REFUSES)]
    assert not undecided, f"shared keys SFT neither reads nor refuses (or both): {undecided}"


def test_config_reference_doc_is_current() -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "config_docs.py"
    proc = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, "docs/config.md is out of date: run python scripts/config_docs.py"
