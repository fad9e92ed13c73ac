"""Extending the advantage / policy-loss registries from user code, and plugin modules named in the config."""

import textwrap

import pytest
import torch

from rlhf.algorithms import (
    ADVANTAGE_ESTIMATORS,
    POLICY_LOSSES,
    AdvantageInputs,
    AlgorithmConfig,
    get_advantage_fn,
    get_policy_loss_fn,
    register_advantage,
    register_policy_loss,
)


@pytest.fixture
def scratch_names():
    """Registry names a test adds; removed afterwards so other tests see the built-ins only."""
    added = []
    yield added
    for registry, name in added:
        if name in registry:
            registry.unregister(name)


def test_register_advantage_in_user_code(scratch_names):
    @register_advantage("test_score_times_two")
    def score_times_two(inputs: AdvantageInputs, cfg: AlgorithmConfig):
        advantages = 2.0 * inputs.token_level_rewards.sum(-1, keepdim=True) * inputs.response_mask
        return advantages, advantages

    scratch_names.append((ADVANTAGE_ESTIMATORS, "test_score_times_two"))
    assert get_advantage_fn("test_score_times_two") is score_times_two
    cfg = AlgorithmConfig(advantage="test_score_times_two")
    cfg.validate()  # the config now accepts the new name
    inputs = AdvantageInputs(torch.tensor([[0.0, 1.5]]), torch.ones(1, 2), torch.tensor([0]))
    advantages, _ = get_advantage_fn(cfg.advantage)(inputs, cfg)
    torch.testing.assert_close(advantages, torch.tensor([[3.0, 3.0]]))


def test_register_policy_loss_in_user_code(scratch_names):
    @register_policy_loss("test_vanilla_pg")
    def vanilla_pg(old_log_probs, log_probs, advantages, response_mask, cfg, agg):
        return agg(-advantages * log_probs, response_mask), {}

    scratch_names.append((POLICY_LOSSES, "test_vanilla_pg"))
    AlgorithmConfig(policy_loss="test_vanilla_pg").validate()
    assert get_policy_loss_fn("test_vanilla_pg") is vanilla_pg


def test_duplicate_name_is_rejected_unless_override(scratch_names):
    with pytest.raises(ValueError, match="already registered"):
        register_advantage("grpo")(lambda inputs, cfg: (inputs.response_mask, inputs.response_mask))

    def first(inputs, cfg):
        return inputs.response_mask, inputs.response_mask

    def second(inputs, cfg):
        return inputs.response_mask, inputs.response_mask

    register_advantage("test_dup")(first)
    scratch_names.append((ADVANTAGE_ESTIMATORS, "test_dup"))
    register_advantage("test_dup", override=True)(second)
    assert get_advantage_fn("test_dup") is second


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match=r"algorithm\.advantage='nope' is not registered; choose one of \[.*'grpo'"):
        get_advantage_fn("nope")
    with pytest.raises(ValueError, match=r"algorithm\.policy_loss='nope'.*'ppo'"):
        get_policy_loss_fn("nope")


def test_plugin_module_registers_on_validate(tmp_path, monkeypatch, scratch_names):
    (tmp_path / "my_rl_plugin_for_tests.py").write_text(
        textwrap.dedent(
            """
            from rlhf.algorithms import register_advantage

            @register_advantage("test_plugin_zero")
            def zero(inputs, cfg):
                return inputs.response_mask * 0, inputs.response_mask * 0
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    scratch_names.append((ADVANTAGE_ESTIMATORS, "test_plugin_zero"))
    cfg = AlgorithmConfig(advantage="test_plugin_zero", plugin_modules=["my_rl_plugin_for_tests"])
    cfg.validate()
    assert "test_plugin_zero" in ADVANTAGE_ESTIMATORS
