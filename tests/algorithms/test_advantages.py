"""rlhf.algorithms.advantages: every estimator against hand-computed values, plus the edge cases."""

import math

import pytest
import torch

from rlhf.algorithms import AdvantageInputs, AlgorithmConfig, get_advantage_fn


def outcome_inputs(scores, lengths, group_ids, num_tokens=3):
    """Rewards on the last response token of each row; an empty row (length 0) keeps its score on token 0."""
    batch = len(scores)
    rewards = torch.zeros(batch, num_tokens)
    mask = torch.zeros(batch, num_tokens)
    for i, (score, length) in enumerate(zip(scores, lengths, strict=True)):
        mask[i, :length] = 1.0
        rewards[i, max(length - 1, 0)] = score
    return AdvantageInputs(rewards, mask, torch.tensor(group_ids))


def run(name, inputs, **cfg_overrides):
    return get_advantage_fn(name)(inputs, AlgorithmConfig(advantage=name, **cfg_overrides))


# Group 0: scores [1, 0, 0, 1] with mixed lengths 3, 2, 1, 3; group 1: all-equal [1, 1]; group 2: a lone sample;
# group 3: a lone EMPTY response (mask all zero).
EDGE_BATCH = dict(
    scores=[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    lengths=[3, 2, 1, 3, 2, 3, 2, 0],
    group_ids=[0, 0, 0, 0, 1, 1, 2, 3],
)


def expected_broadcast(per_seq, lengths, num_tokens=3):
    out = torch.zeros(len(per_seq), num_tokens)
    for i, (value, length) in enumerate(zip(per_seq, lengths, strict=True)):
        out[i, :length] = value
    return out


def test_grpo_hand_computed_with_edge_cases():
    inputs = outcome_inputs(**EDGE_BATCH)
    advantages, returns = run("grpo", inputs)
    # group 0: mean 0.5, unbiased std sqrt((4 * 0.25) / 3) = 0.57735 -> +-0.5 / (0.57735 + 1e-6) = +-0.86603
    # all-equal group, lone sample and empty row -> 0
    a = 0.5 / (math.sqrt(1.0 / 3.0) + 1e-6)
    expected = expected_broadcast([a, -a, -a, a, 0, 0, 0, 0], EDGE_BATCH["lengths"])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, advantages)


def test_grpo_three_sample_group_and_no_std_normalisation():
    inputs = outcome_inputs([3.0, 1.0, 2.0], [3, 3, 3], [7, 7, 7])
    # mean 2, unbiased std sqrt((1 + 1 + 0) / 2) = 1 -> [1, -1, 0] / (1 + 1e-6)
    advantages, _ = run("grpo", inputs)
    torch.testing.assert_close(advantages[:, 0], torch.tensor([1.0, -1.0, 0.0]) / (1 + 1e-6))
    # norm_adv_by_std=False: just s - mean
    advantages, _ = run("grpo", inputs, norm_adv_by_std=False)
    torch.testing.assert_close(advantages[:, 0], torch.tensor([1.0, -1.0, 0.0]))


def test_drgrpo_is_mean_centred_only():
    inputs = outcome_inputs(**EDGE_BATCH)
    advantages, returns = run("drgrpo", inputs)
    # group 0: s - 0.5 = +-0.5; the rest 0
    expected = expected_broadcast([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0], EDGE_BATCH["lengths"])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, advantages)


def test_rloo_leave_one_out():
    inputs = outcome_inputs(**EDGE_BATCH)
    advantages, _ = run("rloo", inputs)
    # 1 - mean(0, 0, 1) = 2/3; 0 - mean(1, 0, 1) = -2/3  (= 4/3 * (s - 0.5))
    expected = expected_broadcast([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0, 0, 0, 0], EDGE_BATCH["lengths"])
    torch.testing.assert_close(advantages, expected)

    # [3, 1, 2]: 3 - (1 + 2)/2 = 1.5, 1 - (3 + 2)/2 = -1.5, 2 - (3 + 1)/2 = 0
    advantages, _ = run("rloo", outcome_inputs([3.0, 1.0, 2.0], [1, 1, 1], [0, 0, 0]))
    torch.testing.assert_close(advantages[:, 0], torch.tensor([1.5, -1.5, 0.0]))


def test_reinforce_pp_whitened_returns():
    # row 0 rewards [0, 0, 1] (3 tokens); row 1 rewards 0 (2 tokens). gamma 1 -> returns [1, 1, 1], [0, 0]
    inputs = outcome_inputs([1.0, 0.0], [3, 2], [0, 1])
    advantages, returns = run("reinforce_pp", inputs)
    torch.testing.assert_close(returns, torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    # 5 tokens [1, 1, 1, 0, 0]: mean 0.6, unbiased var (3 * 0.16 + 2 * 0.36) / 4 = 0.3
    std = math.sqrt(0.3 + 1e-8)
    torch.testing.assert_close(advantages, torch.tensor([[0.4, 0.4, 0.4], [-0.6, -0.6, 0.0]]) / std)


def test_reinforce_pp_discounting_ignores_padding_rewards():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])  # the 5.0 sits on padding
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    _, returns = run("reinforce_pp", AdvantageInputs(rewards, mask, torch.tensor([0, 1])), gamma=0.5)
    # row 0: [0.25, 0.5, 1]; row 1: t=1 -> 2, t=0 -> 0.5 * 2 = 1; padding -> 0
    torch.testing.assert_close(returns, torch.tensor([[0.25, 0.5, 1.0], [1.0, 2.0, 0.0]]))


def test_reinforce_pp_baseline():
    # group 0 scores [1, 0] (2 tokens each); group 1 all-equal [2, 2] (1 token each)
    inputs = outcome_inputs([1.0, 0.0, 2.0, 2.0], [2, 2, 1, 1], [0, 0, 1, 1])
    advantages, returns = run("reinforce_pp_baseline", inputs)
    # centred [0.5, -0.5, 0, 0] -> tokens [.5, .5, -.5, -.5, 0, 0]: mean 0, unbiased var 4 * 0.25 / 5 = 0.2
    a = 0.5 / math.sqrt(0.2 + 1e-8)
    expected = torch.tensor([[a, a, 0.0], [-a, -a, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, advantages)


def test_remax_subtracts_greedy_baseline():
    inputs = outcome_inputs([1.0, 0.0], [3, 2], [0, 1])
    inputs.baseline_scores = torch.tensor([0.5, 0.5])
    advantages, returns = run("remax", inputs)
    torch.testing.assert_close(advantages, torch.tensor([[0.5, 0.5, 0.5], [-0.5, -0.5, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    inputs.baseline_scores = None
    with pytest.raises(ValueError, match="baseline_scores"):
        run("remax", inputs)


def test_gae_hand_computed_with_padding():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.4, 0.8, 9.0]])  # 9.0: garbage on padding, must be ignored
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    inputs = AdvantageInputs(rewards, mask, torch.tensor([0, 1]), values=values)
    advantages, returns = run("gae", inputs)  # gamma = lam = 1
    # row 0: deltas [0.6-0.5, 0.7-0.6, 1-0.7] = [.1, .1, .3] -> A = [.5, .4, .3]; returns A + V = [1, 1, 1]
    # row 1: deltas [0.8-0.4, 1-0.8] = [.4, .2] -> A = [.6, .2]; returns [1, 1]
    torch.testing.assert_close(returns, torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    # whiten [.5, .4, .3, .6, .2]: mean .4, unbiased var (.01 + 0 + .01 + .04 + .04) / 4 = .025
    std = math.sqrt(0.025 + 1e-8)
    torch.testing.assert_close(advantages, torch.tensor([[0.1, 0.0, -0.1], [0.2, -0.2, 0.0]]) / std)


def test_gae_discounted():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    inputs = AdvantageInputs(rewards, torch.ones(1, 3), torch.tensor([0]), values=values)
    _, returns = run("gae", inputs, gamma=0.9, lam=0.5)
    # t2: delta = 1 - .7 = .3, A = .3; t1: delta = .9*.7 - .6 = .03, A = .03 + .45*.3 = .165
    # t0: delta = .9*.6 - .5 = .04, A = .04 + .45*.165 = .11425; returns = A + V
    torch.testing.assert_close(returns, torch.tensor([[0.61425, 0.765, 1.0]]))


def test_gae_requires_values():
    with pytest.raises(ValueError, match="values"):
        run("gae", outcome_inputs([1.0], [3], [0]))


def test_all_equal_rewards_give_exact_zeros():
    # eight scores of 0.7: in float32 sum / 8 != 0.7, and a naive (s - mean) / (std + 1e-6) gives +-0.056 (checked)
    inputs = outcome_inputs([0.7] * 8, [3] * 8, [0] * 8)
    for name in ("grpo", "drgrpo", "rloo", "reinforce_pp_baseline"):
        advantages, _ = run(name, inputs)
        assert torch.count_nonzero(advantages) == 0, name


@pytest.mark.parametrize("name", ["grpo", "drgrpo", "rloo", "reinforce_pp", "reinforce_pp_baseline", "remax", "gae"])
def test_no_nan_and_zero_on_padding(name):
    inputs = outcome_inputs(**EDGE_BATCH)
    inputs.values = torch.rand(8, 3)
    inputs.baseline_scores = torch.full((8,), 0.5)
    advantages, returns = run(name, inputs)
    assert advantages.shape == returns.shape == (8, 3)
    assert torch.isfinite(advantages).all() and torch.isfinite(returns).all()
    padding = inputs.response_mask == 0
    assert torch.all(advantages[padding] == 0) and torch.all(returns[padding] == 0)
    assert torch.all(advantages[-1] == 0)  # the empty response


@pytest.mark.parametrize("name", ["grpo", "rloo", "reinforce_pp", "gae"])
def test_whole_batch_empty(name):
    inputs = AdvantageInputs(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([0, 0]), values=torch.rand(2, 4))
    advantages, returns = run(name, inputs)
    assert torch.all(advantages == 0) and torch.all(returns == 0)


@pytest.mark.parametrize("name", ["grpo", "drgrpo", "rloo", "reinforce_pp", "gae"])
def test_interior_masked_positions_are_skipped(name):
    """A multi-turn response (model tokens, then 2 observation tokens, then model tokens) gets exactly the advantages
    and returns of the same response without the observation tokens, and 0 on them."""
    torch.manual_seed(0)
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 0.3, 0.0, 0.0]])
    values = torch.rand(2, 4)
    contiguous = AdvantageInputs(rewards, torch.ones(2, 4), torch.tensor([0, 0]), values=values)
    keep, observation = [0, 1, 4, 5], [2, 3]
    widened = torch.zeros(2, 6)
    widened[:, keep] = rewards
    widened_values = torch.rand(2, 6)  # the critic's values on observation tokens must not matter
    widened_values[:, keep] = values
    mask = torch.zeros(2, 6)
    mask[:, keep] = 1.0
    interior = AdvantageInputs(widened, mask, torch.tensor([0, 0]), values=widened_values)
    expected_adv, expected_ret = run(name, contiguous, gamma=0.5, lam=0.9)
    advantages, returns = run(name, interior, gamma=0.5, lam=0.9)
    torch.testing.assert_close(advantages[:, keep], expected_adv)
    torch.testing.assert_close(returns[:, keep], expected_ret)
    assert torch.all(advantages[:, observation] == 0) and torch.all(returns[:, observation] == 0)
