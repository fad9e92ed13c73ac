"""rlhf.algorithms.dapo: dynamic-sampling group filter and the soft overlong penalty."""

import pytest
import torch

from rlhf.algorithms import overlong_reward_penalty, select_informative_groups


def test_select_informative_groups():
    # group 0 [1, 0] differs -> keep; group 1 [1, 1] all agree -> drop; group 2 alone -> drop
    scores = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5])
    keep = select_informative_groups(scores, torch.tensor([0, 0, 1, 1, 2]))
    assert keep.tolist() == [True, True, False, False, False]
    # group ids need not be contiguous or sorted
    keep = select_informative_groups(torch.tensor([0.0, 1.0, 0.0]), torch.tensor([42, 7, 42]))
    assert keep.tolist() == [False, False, False]


def test_overlong_penalty_ramp():
    lengths = torch.tensor([5, 6, 7, 8, 10])
    # L_max 10, buffer 4 -> ramp starts after 6: exceed [-1, 0, 1, 2, 4] / 4 -> [0, 0, -.25, -.5, -1]
    penalty = overlong_reward_penalty(lengths, max_response_length=10, buffer_len=4, penalty_factor=1.0)
    torch.testing.assert_close(penalty, torch.tensor([0.0, 0.0, -0.25, -0.5, -1.0]))
    penalty = overlong_reward_penalty(lengths, max_response_length=10, buffer_len=4, penalty_factor=0.5)
    torch.testing.assert_close(penalty, torch.tensor([0.0, 0.0, -0.125, -0.25, -0.5]))


def test_overlong_bad_buffer():
    with pytest.raises(ValueError, match="algorithm.overlong.buffer_len=11"):
        overlong_reward_penalty(torch.tensor([1]), max_response_length=10, buffer_len=11, penalty_factor=1.0)
