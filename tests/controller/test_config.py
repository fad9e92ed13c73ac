"""Contract 3: config errors fail in the driver, naming the key, before any worker starts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from recipes import RECIPES, compose_recipe
from rlhf.config import RLHFConfig
from rlhf.config_checks import validate
from rlhf.data import write_rows
from rlhf.entry import absolute_local_paths

ROOT = RECIPES.parent


def tiny(tiny_model_dir: Path, *overrides: str) -> RLHFConfig:
    return compose_recipe("grpo_arith_tiny", [f"model.path={tiny_model_dir}", "model.build_tiny=false", *overrides])


def test_default_recipe_validates(tiny_model_dir: Path) -> None:
    validate(tiny(tiny_model_dir))


def test_every_rl_recipe_composes_into_the_schema() -> None:
    """SFT recipes have their own schema and test (tests/sft/test_sft_config.py)."""
    for recipe in sorted(r for r in RECIPES.glob("*.yaml") if not r.stem.startswith("sft_")):
        cfg = compose_recipe(recipe.stem)
        assert isinstance(cfg, RLHFConfig), recipe


def test_unknown_key_is_rejected_at_compose() -> None:
    with pytest.raises(ConfigCompositionException, match="not_a_key"):
        compose_recipe("grpo_arith_tiny", ["trainer.not_a_key=1"])


def test_unknown_key_is_rejected_however_written() -> None:
    """`+key=value` forces a new key into Hydra's composition; the typed schema still refuses it, naming it."""
    with pytest.raises(ValueError, match="unknown config key actor.foo"):
        compose_recipe("grpo_arith_tiny", ["+actor.foo=1"])


def test_wrong_type_names_the_key() -> None:
    with pytest.raises(ConfigCompositionException, match="total_steps"):
        compose_recipe("grpo_arith_tiny", ["trainer.total_steps=many"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.train_batch_size=6"], "data.train_batch_size=6 must be divisible by actor.ppo_mini_batch_size=4"),
        (["data.train_batch_size=9", "actor.ppo_mini_batch_size=3"], "divisible by the number of actor ranks"),
        (["actor.micro_batch_size_per_device=3"], "actor.micro_batch_size_per_device=3 must divide"),
        (["rollout.n=0"], "rollout.n=0 must be >= 1"),
        (["rollout.max_response_length=1000"], "exceeds the model's context of 256 tokens"),
        (["rollout.temperature=0"], "rollout.temperature=0.0 must be > 0"),
        (["trainer.logger=[console,tensorboard]"], "trainer.logger has an unknown value 'tensorboard'"),
        (["algorithm.advantage=nope"], "algorithm.advantage='nope' is not registered"),
        (["actor.zero_stage=4"], "actor.zero_stage=4"),
    ],
)
def test_bad_values_name_the_key(tiny_model_dir: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(tiny(tiny_model_dir, *overrides))


def test_missing_model_path_names_the_key(tmp_path: Path) -> None:
    cfg = compose_recipe("grpo_arith_tiny", [f"model.path={tmp_path / 'nope'}", "model.build_tiny=false"])
    with pytest.raises(ValueError, match="model.path=.*does not exist"):
        validate(cfg)


def test_missing_data_file_names_the_key(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data.train_files: file .*missing.parquet"):
        validate(tiny(tiny_model_dir, f"data.train_files=[{tmp_path / 'missing.parquet'}]"))


def test_gsm8k_qwen_recipe_validates(tmp_path: Path) -> None:
    """The 8-GPU recipe composes and passes validation given its model config and data files."""
    model = tmp_path / "Qwen2.5-0.5B-Instruct"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen2", "max_position_embeddings": 32768}))
    row = {
        "prompt": [{"role": "user", "content": "1+1?"}],
        "reward_model": {"ground_truth": "2"},
        "data_source": "openai/gsm8k",
    }
    train, test = tmp_path / "train.parquet", tmp_path / "test.parquet"
    write_rows([row], train)
    write_rows([row], test)
    cfg = compose_recipe(
        "grpo_gsm8k_qwen2_5_0_5b", [f"model.path={model}", f"data.train_files=[{train}]", f"data.val_files=[{test}]"]
    )
    validate(cfg)
    assert cfg.trainer.num_devices_per_node == 8 and cfg.model.dtype == "bfloat16"
    with pytest.raises(ValueError, match="exceeds the model's context of 32768"):
        validate(
            compose_recipe(
                "grpo_gsm8k_qwen2_5_0_5b",
                [
                    f"model.path={model}",
                    f"data.train_files=[{train}]",
                    f"data.val_files=[{test}]",
                    "rollout.max_response_length=40000",
                ],
            )
        )


def run_cli(*overrides: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "rlhf.main", "--config-name", "grpo_arith_tiny", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, time.perf_counter() - start


def test_cli_rejects_bad_batch_size_before_any_worker(tiny_model_dir: Path) -> None:
    proc, _ = run_cli(f"model.path={tiny_model_dir}", "model.build_tiny=false", "data.train_batch_size=6")
    assert proc.returncode != 0
    assert "data.train_batch_size=6" in proc.stderr
    assert "Ray" not in proc.stderr and "ActorRolloutRefWorker" not in proc.stderr


def test_cli_rejects_dataset_missing_a_column(tiny_model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": [{"role": "user", "content": "1+1="}], "data_source": "arith"}) + "\n")
    proc, _ = run_cli(f"model.path={tiny_model_dir}", "model.build_tiny=false", f"data.train_files=[{bad}]")
    assert proc.returncode != 0
    assert "missing column 'reward_model.ground_truth'" in proc.stderr and str(bad) in proc.stderr
    assert "started a local Ray" not in proc.stderr


def test_cli_prints_resolved_config() -> None:
    proc, _ = run_cli("--cfg", "job", "trainer.total_steps=5", "actor.optim.lr=2e-5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "total_steps: 5" in proc.stdout and "lr: 2.0e-05" in proc.stdout


@pytest.mark.parametrize(("script", "recipe"), [("rlhf-train", "grpo_arith_tiny"), ("rlhf-sft", "sft_arith_tiny")])
def test_console_scripts_compose_the_recipes(script: str, recipe: str) -> None:
    """The installed console scripts are the entry points (`rlhf-train` = `python -m rlhf.main`), from any folder."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / script), "--config-name", recipe, "--cfg", "job"],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "model:" in proc.stdout and "trainer:" in proc.stdout


def test_local_relative_paths_reach_workers_as_absolute_ones(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Workers run in other directories (a Ray job's uploaded copy): the paths the driver validated go to them whole.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny").symlink_to(tiny_model_dir)
    (tmp_path / "train.jsonl").write_text("")
    cfg = compose_recipe(
        "grpo_arith_tiny",
        ["model.path=models/tiny", "reward.model_path=Org/hub-model", "data.train_files=train.jsonl"],
    )
    absolute_local_paths(cfg)
    assert cfg.model.path == str(tmp_path / "models" / "tiny")
    assert cfg.reward.model_path == "Org/hub-model"  # a hub id is no local path
    assert cfg.data.train_files == [str(tmp_path / "train.jsonl")]
    assert cfg.data.builtin_dir == str(tmp_path / "data" / "arith")
