"""rlhf.algorithms.policy_loss: ppo / gspo / cispo values and gradients against hand computations."""

import math

import pytest
import torch

from rlhf.algorithms import AlgorithmConfig, entropy_loss, get_policy_loss_fn, make_loss_aggregator

TOKEN_MEAN = make_loss_aggregator("token-mean")
SEQ_MEAN_TOKEN_MEAN = make_loss_aggregator("seq-mean-token-mean")


def ppo_case():
    # ratios r = [1.5, 0.5, 1.1, 5.0] against old log-probs 0, advantages [1, -1, 1, -1]
    log_probs = torch.log(torch.tensor([[1.5, 0.5, 1.1, 5.0]])).requires_grad_(True)
    return torch.zeros(1, 4), log_probs, torch.tensor([[1.0, -1.0, 1.0, -1.0]]), torch.ones(1, 4)


def test_ppo_clip_and_dual_clip():
    old, new, adv, mask = ppo_case()
    loss, metrics = get_policy_loss_fn("ppo")(old, new, adv, mask, AlgorithmConfig(), TOKEN_MEAN)
    # t0: max(-1.5, -1.2) = -1.2 (clipped)    t1: max(0.5, 0.8) = 0.8 (clipped)
    # t2: max(-1.1, -1.1) = -1.1              t3: max(5, 1.2) = 5, A < 0 -> min(5, 3 * 1) = 3 (dual clip)
    # token-mean: (-1.2 + 0.8 - 1.1 + 3) / 4 = 0.375
    torch.testing.assert_close(loss, torch.tensor(0.375))
    torch.testing.assert_close(metrics["actor/pg_clipfrac"], torch.tensor(0.5))
    torch.testing.assert_close(metrics["actor/pg_clipfrac_lower"], torch.tensor(0.25))
    # ppo_kl = mean(old - new) = -(ln 1.5 + ln 0.5 + ln 1.1 + ln 5) / 4
    expected_kl = -(math.log(1.5) + math.log(0.5) + math.log(1.1) + math.log(5.0)) / 4
    torch.testing.assert_close(metrics["actor/ppo_kl"], torch.tensor(expected_kl))
    # only t2 is unclipped: d/dlogp (-A r) / 4 = -1.1 / 4
    loss.backward()
    torch.testing.assert_close(new.grad, torch.tensor([[0.0, 0.0, -0.275, 0.0]]))


def test_ppo_without_dual_clip_and_with_clip_higher():
    old, new, adv, mask = ppo_case()
    loss, metrics = get_policy_loss_fn("ppo")(old, new, adv, mask, AlgorithmConfig(clip_ratio_c=0.0), TOKEN_MEAN)
    # t3 keeps 5: (-1.2 + 0.8 - 1.1 + 5) / 4 = 0.875
    torch.testing.assert_close(loss, torch.tensor(0.875))
    assert metrics["actor/pg_clipfrac_lower"].item() == 0.0
    cfg = AlgorithmConfig(clip_ratio_high=0.28)
    loss, _ = get_policy_loss_fn("ppo")(old, new, adv, mask, cfg, TOKEN_MEAN)
    # t0 now clipped at 1.28: (-1.28 + 0.8 - 1.1 + 3) / 4 = 0.355
    torch.testing.assert_close(loss, torch.tensor(0.355))


def test_ppo_on_policy_equals_vanilla_policy_gradient():
    log_probs = torch.randn(3, 5).requires_grad_(True)
    adv, mask = torch.randn(3, 5), torch.ones(3, 5)
    loss, metrics = get_policy_loss_fn("ppo")(log_probs.detach(), log_probs, adv, mask, AlgorithmConfig(), TOKEN_MEAN)
    loss.backward()
    # ratio 1: loss -mean(A), gradient -A / N
    torch.testing.assert_close(loss, -adv.mean())
    torch.testing.assert_close(log_probs.grad, -adv / 15)
    assert metrics["actor/pg_clipfrac"].item() == 0.0


@pytest.mark.parametrize("advantage, expected_grad, expected_clipfrac", [(1.0, -0.4899, 0.0), (-1.0, 0.0, 1.0)])
def test_gspo_sequence_ratio(advantage, expected_grad, expected_clipfrac):
    log_probs = torch.log(torch.tensor([[1.2, 0.8]])).requires_grad_(True)
    adv = torch.full((1, 2), advantage)
    loss, metrics = get_policy_loss_fn("gspo")(
        torch.zeros(1, 2), log_probs, adv, torch.ones(1, 2), AlgorithmConfig(), SEQ_MEAN_TOKEN_MEAN
    )
    # s = exp((ln 1.2 + ln 0.8) / 2) = exp(-0.020411) = 0.979796, far below 1 - 3e-4
    s = math.exp((math.log(1.2) + math.log(0.8)) / 2)
    # A = +1: max(-s, -(1 - 3e-4)) = -s, unclipped; gradient per token -A * s / 2 = -0.4899
    # A = -1: max(s, 1 - 3e-4) = 0.9997, clipped; no gradient
    expected_loss = -s if advantage > 0 else 1 - 3e-4
    torch.testing.assert_close(loss, torch.tensor(expected_loss))
    loss.backward()
    torch.testing.assert_close(log_probs.grad, torch.full((1, 2), expected_grad), atol=1e-4, rtol=0)
    assert metrics["actor/pg_clipfrac"].item() == expected_clipfrac


def test_gspo_ignores_padding_in_sequence_ratio():
    # the padded token's huge log-ratio must not enter s
    log_probs = torch.tensor([[math.log(1.2), math.log(0.8), 30.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, _ = get_policy_loss_fn("gspo")(
        torch.zeros(1, 3), log_probs, torch.ones(1, 3), mask, AlgorithmConfig(), SEQ_MEAN_TOKEN_MEAN
    )
    torch.testing.assert_close(loss, torch.tensor(-math.exp((math.log(1.2) + math.log(0.8)) / 2)))


def test_cispo_clipped_detached_weight():
    log_probs = torch.log(torch.tensor([[2.0, 0.5, 1.1]])).requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0, 1.0]])
    loss, metrics = get_policy_loss_fn("cispo")(
        torch.zeros(1, 3), log_probs, adv, torch.ones(1, 3), AlgorithmConfig(), TOKEN_MEAN
    )
    # weights clip(r, 0, 1.28) = [1.28, 0.5, 1.1]; l = -w * A * log p
    # = [-1.28 * ln 2, -0.5 * ln 2, -1.1 * ln 1.1] = [-0.887228, -0.346574, -0.104841]
    expected = (-1.28 * math.log(2) - 0.5 * math.log(2) - 1.1 * math.log(1.1)) / 3
    torch.testing.assert_close(loss, torch.tensor(expected))
    loss.backward()
    # gradient -w * A / 3: the truncated token still gets a gradient (unlike PPO)
    torch.testing.assert_close(log_probs.grad, torch.tensor([[-1.28, 0.5, -1.1]]) / 3)
    torch.testing.assert_close(metrics["actor/pg_clipfrac"], torch.tensor(1 / 3))
    assert metrics["actor/pg_clipfrac_lower"].item() == 0.0


@pytest.mark.parametrize("name", ["ppo", "gspo", "cispo"])
def test_advantage_times_weight_equals_loss_times_weight(name):
    """The rollout-IS contract: passing advantages * w scales each token's loss by w."""
    torch.manual_seed(0)
    old = torch.randn(2, 4) * 0.1
    new = old + torch.randn(2, 4) * 0.3
    adv = torch.randn(2, 1).expand(2, 4).contiguous()  # per-sequence advantages (gspo's setting)
    weights = torch.rand(2, 4) + 0.5
    mask = torch.ones(2, 4)
    captured = []

    def capture(loss_mat, m):
        captured.append(loss_mat)
        return (loss_mat * m).sum()

    fn, cfg = get_policy_loss_fn(name), AlgorithmConfig()
    fn(old, new, adv * weights, mask, cfg, capture)
    fn(old, new, adv, mask, cfg, capture)
    torch.testing.assert_close(captured[0], captured[1] * weights)


def test_entropy_loss():
    entropy = torch.tensor([[1.0, 2.0, 9.0]])
    value, metrics = entropy_loss(entropy, torch.tensor([[1.0, 1.0, 0.0]]), TOKEN_MEAN)
    torch.testing.assert_close(value, torch.tensor(1.5))  # (1 + 2) / 2
    assert metrics["actor/entropy"].item() == 1.5


@pytest.mark.parametrize("name", ["ppo", "gspo", "cispo"])
def test_fully_masked_batch_is_finite(name):
    log_probs = torch.randn(2, 3).requires_grad_(True)
    loss, metrics = get_policy_loss_fn(name)(
        torch.randn(2, 3), log_probs, torch.randn(2, 3), torch.zeros(2, 3), AlgorithmConfig(), TOKEN_MEAN
    )
    loss.backward()
    assert loss.item() == 0.0 and torch.all(log_probs.grad == 0)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in metrics.values())
