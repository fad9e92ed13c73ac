"""rlhf.algorithms.config: defaults validate, every bad value names its key, OmegaConf accepts the schema."""

import pytest

from rlhf.algorithms import AlgorithmConfig, DynamicSamplingConfig, KLControlConfig, OverlongConfig


def test_defaults_validate():
    AlgorithmConfig().validate()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"advantage": "foo"}, "algorithm.advantage='foo' is not registered; choose one of ["),
        ({"policy_loss": "trpo"}, "algorithm.policy_loss='trpo' is not registered"),
        ({"loss_agg_mode": "mean"}, "algorithm.loss_agg_mode='mean'"),
        ({"kl_loss_type": "low_var_kl"}, "algorithm.kl_loss_type='low_var_kl'"),
        ({"kl_penalty": "kl"}, "algorithm.kl_penalty='kl'"),
        ({"kl_ctrl": KLControlConfig(type="pid")}, "algorithm.kl_ctrl.type='pid'"),
        ({"kl_ctrl": KLControlConfig(target_kl=0.0)}, "algorithm.kl_ctrl.target_kl=0.0"),
        ({"kl_ctrl": KLControlConfig(horizon=0)}, "algorithm.kl_ctrl.horizon=0"),
        ({"rollout_is": "geometric"}, "algorithm.rollout_is='geometric'"),
        ({"rollout_is_threshold": 0.0}, "algorithm.rollout_is_threshold=0.0"),
        ({"gamma": 1.5}, "algorithm.gamma=1.5"),
        ({"lam": -0.1}, "algorithm.lam=-0.1"),
        ({"clip_ratio_low": 1.2}, "algorithm.clip_ratio_low=1.2"),
        ({"clip_ratio_high": -0.1}, "algorithm.clip_ratio_high=-0.1"),
        ({"clip_ratio_c": 0.5}, "algorithm.clip_ratio_c=0.5"),
        ({"kl_loss_coef": -1.0}, "algorithm.kl_loss_coef=-1.0"),
        ({"cliprange_value": 0.0}, "algorithm.cliprange_value=0.0"),
        ({"dynamic_sampling": DynamicSamplingConfig(max_num_gen_batches=-1)}, "algorithm.dynamic_sampling."),
        ({"overlong": OverlongConfig(buffer_len=0)}, "algorithm.overlong.buffer_len=0"),
        ({"overlong": OverlongConfig(penalty_factor=-1.0)}, "algorithm.overlong.penalty_factor=-1.0"),
        ({"plugin_modules": ["no_such_module_xyz"]}, "algorithm.plugin_modules"),
    ],
)
def test_validation_names_the_key(overrides, message):
    with pytest.raises(ValueError) as excinfo:
        AlgorithmConfig(**overrides).validate()
    assert message in str(excinfo.value)


def test_dual_clip_can_be_disabled():
    AlgorithmConfig(clip_ratio_c=0.0).validate()


def test_derived_requirements():
    assert AlgorithmConfig(advantage="gae").needs_critic()
    assert not AlgorithmConfig().needs_critic()
    assert not AlgorithmConfig().needs_ref()
    assert AlgorithmConfig(use_kl_loss=True).needs_ref()
    assert AlgorithmConfig(use_kl_in_reward=True).needs_ref()


def test_hydra_schema_composes_into_the_typed_config():
    """Hydra composes over the OmegaConf mirror of the schema; `build` gives back the typed dataclasses."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError

    from rlhf.schema import build, hydra_schema

    schema = OmegaConf.structured(hydra_schema(AlgorithmConfig))
    merged = OmegaConf.merge(schema, {"advantage": "rloo", "rollout_is": "token", "kl_ctrl": {"type": "adaptive"}})
    cfg = build(AlgorithmConfig, OmegaConf.to_container(merged))
    assert isinstance(cfg, AlgorithmConfig) and isinstance(cfg.kl_ctrl, KLControlConfig)
    assert cfg.advantage == "rloo" and cfg.rollout_is == "token" and cfg.kl_ctrl.type == "adaptive"
    cfg.validate()
    with pytest.raises(ConfigKeyError):
        OmegaConf.merge(schema, {"not_a_key": 1})
    with pytest.raises(ValueError, match="unknown config key kl_ctrl.nope"):
        build(AlgorithmConfig, {"kl_ctrl": {"nope": 1}})
