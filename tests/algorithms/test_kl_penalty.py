"""rlhf.algorithms.kl and kl_control: estimators, the in-reward penalty, the KL loss, and the controllers."""

import math

import pytest
import torch

from rlhf.algorithms import (
    AdaptiveKLController,
    FixedKLController,
    KLControlConfig,
    apply_kl_penalty,
    kl_estimate,
    kl_loss,
    make_kl_controller,
    make_loss_aggregator,
)


def test_kl_estimators_hand_computed():
    # d = log_probs - ref = [0.5, -0.5]
    log_probs = torch.tensor([[-1.0, -1.0]])
    ref = torch.tensor([[-1.5, -0.5]])
    torch.testing.assert_close(kl_estimate(log_probs, ref, "k1"), torch.tensor([[0.5, -0.5]]))
    torch.testing.assert_close(kl_estimate(log_probs, ref, "k2"), torch.tensor([[0.125, 0.125]]))
    torch.testing.assert_close(kl_estimate(log_probs, ref, "abs"), torch.tensor([[0.5, 0.5]]))
    # k3 = exp(-d) + d - 1: exp(-0.5) - 0.5 = 0.106531, exp(0.5) - 1.5 = 0.148721
    expected_k3 = torch.tensor([[math.exp(-0.5) - 0.5, math.exp(0.5) - 1.5]])
    torch.testing.assert_close(kl_estimate(log_probs, ref, "k3"), expected_k3)


def test_k3_is_clamped():
    # ref - logp = 30 -> clamped to 20 -> exp(20) - 21 -> clamped to 10
    k3 = kl_estimate(torch.tensor([[-30.0]]), torch.tensor([[0.0]]), "k3")
    assert k3.item() == 10.0
    with pytest.raises(ValueError, match="k3"):
        kl_estimate(torch.zeros(1, 1), torch.zeros(1, 1), "low_var_kl")


def test_apply_kl_penalty():
    scores = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # the last row is empty
    log_probs = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0], [1.0, 1.0, 1.0]])
    rewards, metrics = apply_kl_penalty(scores, log_probs, torch.zeros(3, 3), mask, kl_coef=0.1, kind="k1")
    # masked k1 = [[.1, .2, .3], [.4, .5, 0], [0, 0, 0]]; rewards = scores - 0.1 * kl
    expected = torch.tensor([[-0.01, -0.02, 0.97], [-0.04, 0.95, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(rewards, expected)
    # per-sequence token means .2 and .45 (the empty row does not count) -> .325
    assert metrics["actor/reward_kl_penalty"] == pytest.approx(0.325)
    assert metrics["actor/reward_kl_penalty_coeff"] == pytest.approx(0.1)


def test_kl_loss_aggregates_estimator():
    log_probs, ref = torch.tensor([[-1.0, -1.0]]), torch.tensor([[-1.5, -0.5]])
    loss, metrics = kl_loss(log_probs, ref, torch.ones(1, 2), "k2", make_loss_aggregator("token-mean"))
    torch.testing.assert_close(loss, torch.tensor(0.125))
    assert metrics["actor/kl_loss"].item() == pytest.approx(0.125)


def test_adaptive_kl_controller_two_updates():
    controller = AdaptiveKLController(init_kl_coef=0.2, target_kl=1.0, horizon=100)
    # error 1.5 / 1 - 1 = 0.5 -> clipped to 0.2; beta *= 1 + 0.2 * 10 / 100 = 1.02 -> 0.204
    controller.update(current_kl=1.5, n_steps=10)
    assert controller.value == pytest.approx(0.204)
    # error 0.95 - 1 = -0.05; beta *= 1 - 0.05 * 50 / 100 = 0.975 -> 0.1989
    controller.update(current_kl=0.95, n_steps=50)
    assert controller.value == pytest.approx(0.1989)

    restored = AdaptiveKLController(init_kl_coef=1.0, target_kl=1.0, horizon=100)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == controller.value


def test_fixed_controller_and_factory():
    fixed = make_kl_controller(KLControlConfig(type="fixed", kl_coef=0.05))
    assert isinstance(fixed, FixedKLController)
    fixed.update(current_kl=100.0, n_steps=1000)
    assert fixed.value == 0.05
    adaptive = make_kl_controller(KLControlConfig(type="adaptive", kl_coef=0.1, target_kl=0.5, horizon=10))
    assert isinstance(adaptive, AdaptiveKLController) and adaptive.value == 0.1
    with pytest.raises(ValueError, match="algorithm.kl_ctrl.type='pid'"):
        make_kl_controller(KLControlConfig(type="pid"))
