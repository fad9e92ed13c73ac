"""async_training.*: the defaults keep today's colocated synchronous run; conflicts fail at start-up naming both keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipes import compose_recipe
from rlhf.algorithms import ADVANTAGE_ESTIMATORS, AdvantageInputs, AlgorithmConfig, register_advantage
from rlhf.config import RLHFConfig
from rlhf.config_checks import validate
from rlhf.schema import ConfigError

SPLIT = ["async_training.placement=split"]
IS = "algorithm.rollout_is=token"


def tiny(tiny_model_dir: Path, *overrides: str) -> RLHFConfig:
    return compose_recipe("grpo_arith_tiny", [f"model.path={tiny_model_dir}", "model.build_tiny=false", *overrides])


def test_default_is_colocated_and_synchronous(tiny_model_dir: Path) -> None:
    cfg = tiny(tiny_model_dir)
    validate(cfg)
    assert cfg.async_training.placement == "colocated" and not cfg.async_training.is_split
    assert cfg.async_training.max_staleness == 0


@pytest.mark.parametrize(
    "overrides",
    [
        SPLIT,
        [*SPLIT, IS, "async_training.max_staleness=1", "async_training.num_rollout_workers=2"],
        [*SPLIT, IS, "async_training.max_staleness=3", "algorithm.advantage=rloo"],
        [*SPLIT, "algorithm.advantage=remax"],  # ReMax is fine when every sample is on-policy
    ],
)
def test_valid_split_configs(tiny_model_dir: Path, overrides: list[str]) -> None:
    validate(tiny(tiny_model_dir, *overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["async_training.placement=apart"], "async_training.placement='apart' is not valid; choose from"),
        (["async_training.max_staleness=-1"], "async_training.max_staleness=-1 must be >= 0"),
        (["async_training.num_rollout_workers=0"], "async_training.num_rollout_workers=0 must be >= 1"),
        (["async_training.sync_timeout_s=0"], "async_training.sync_timeout_s=0.0 must be > 0"),
        (["async_training.max_staleness=1"], "async_training.max_staleness=1 needs async_training.placement=split"),
        (
            [*SPLIT, "async_training.max_staleness=1"],
            "async_training.max_staleness=1 trains on samples of older weights: set algorithm.rollout_is=token",
        ),
        (
            [*SPLIT, IS, "async_training.max_staleness=1", "algorithm.advantage=remax"],
            "algorithm.advantage='remax' needs on-policy samples .* async_training.max_staleness=1",
        ),
        (
            [*SPLIT, IS, "async_training.max_staleness=2", "algorithm.dynamic_sampling.enable=true"],
            "algorithm.dynamic_sampling.enable=true with async_training.max_staleness=2",
        ),
        ([*SPLIT, "actor.lora.rank=4"], "actor.lora.rank=4 is not supported with async_training.placement=split"),
        ([*SPLIT, "rollout.tensor_parallel_size=2"], "rollout.tensor_parallel_size=2 is not supported with async"),
    ],
)
def test_conflicts_name_the_keys(tiny_model_dir: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(tiny(tiny_model_dir, *overrides))


def test_a_plugin_estimator_can_declare_itself_on_policy_only(tiny_model_dir: Path) -> None:
    @register_advantage("test_current_policy_baseline", on_policy_only=True)
    def estimator(inputs: AdvantageInputs, cfg: AlgorithmConfig):
        return inputs.token_level_rewards, inputs.token_level_rewards

    try:
        assert ADVANTAGE_ESTIMATORS.is_on_policy_only("test_current_policy_baseline")
        assert not ADVANTAGE_ESTIMATORS.is_on_policy_only("grpo")
        cfg = tiny(tiny_model_dir, *SPLIT, IS, "async_training.max_staleness=1")
        cfg.algorithm.advantage = "test_current_policy_baseline"
        with pytest.raises(ConfigError, match="algorithm.advantage='test_current_policy_baseline' needs on-policy"):
            validate(cfg)
    finally:
        ADVANTAGE_ESTIMATORS.unregister("test_current_policy_baseline")
    assert not ADVANTAGE_ESTIMATORS.is_on_policy_only("test_current_policy_baseline")
