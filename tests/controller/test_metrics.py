import pytest
import torch

from rlhf.batch import Batch, group_ids
from rlhf.metrics import (
    data_metrics,
    explained_variance,
    logprob_diff_metrics,
    mfu_metrics,
    throughput_metrics,
    update_flops,
    validation_metrics,
)
from rlhf.tracking import format_console_line


def test_logprob_diff_ignores_padding() -> None:
    trainer = torch.tensor([[-1.0, -2.0, -9.0]])
    rollout = torch.tensor([[-1.0, -2.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    m = logprob_diff_metrics(trainer, rollout, mask)
    assert m["rollout/logprob_diff_max"] == pytest.approx(0.5)
    assert m["rollout/logprob_diff_mean"] == pytest.approx(0.25)


def test_data_metrics_scores_lengths_and_reward_failures() -> None:
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    scores = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    batch = Batch(
        {
            "response_mask": mask,
            "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [0, 1, 1, 1, 1]]),
            "token_level_scores": scores,
            "token_level_rewards": scores,
            "advantages": torch.tensor([[0.5, 0.5, 0.0], [-0.5, -0.5, -0.5]]),
            "returns": torch.zeros(2, 3),
            "reward_error": torch.tensor([0.0, 1.0]),
            "reward_timeout": torch.tensor([1.0, 0.0]),
        }
    )
    m = data_metrics(batch)
    assert m["critic/score/mean"] == pytest.approx(0.5)
    assert m["response_length/mean"] == pytest.approx(2.5)
    assert m["response_length/clip_ratio"] == pytest.approx(0.5)
    assert m["prompt_length/mean"] == pytest.approx(1.5)  # (4-2) and (4-3)
    assert m["critic/advantages/min"] == pytest.approx(-0.5)
    assert m["reward/errors"] == 1 and m["reward/timeouts"] == 1


def test_throughput_counts_real_tokens_per_device() -> None:
    batch = Batch({"attention_mask": torch.tensor([[1, 1, 0], [1, 1, 1]])})
    m = throughput_metrics(batch, {"timing_s/step": 0.5}, num_devices=2)
    assert m["perf/throughput"] == pytest.approx(5 / 0.5 / 2)
    assert m["perf/time_per_step"] == 0.5 and m["perf/total_num_tokens"] == 5


def test_mfu_is_update_flops_over_update_time_as_verl() -> None:
    # 2 sequences of 3 and 4 tokens, 10 params, attention coefficient 6 x hidden 4 x layers 2 = 48, 1 epoch:
    # 6 x 10 x 7 + 48 x (9 + 16) = 420 + 1200 = 1620 FLOPs.
    flops = update_flops(10, 48.0, [3, 4], passes=1)
    assert flops == 1620
    assert update_flops(10, 48.0, [3, 4], passes=2) == 3240
    assert mfu_metrics(flops, 0.5, 2, "cpu") == {}  # no known peak for a CPU
    m = mfu_metrics(1e15, 2.0, 2, "NVIDIA H100 80GB HBM3")
    assert m["perf/mfu/actor"] == pytest.approx(1e15 / 2.0 / 2 / 989e12)


def test_explained_variance() -> None:
    returns = torch.tensor([[1.0, 2.0, 0.0], [3.0, 4.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    # values = mean(returns): residual variance = variance of returns -> 0
    assert explained_variance(torch.full_like(returns, 2.5), returns, mask) == pytest.approx(0.0)


def test_validation_accuracy_per_source_uses_correctness_not_score() -> None:
    # Partial credit (0.1, a format bonus) earns reward but is not correct.
    m = validation_metrics(
        acc=[1.0, 0.0, 1.0],
        scores=[1.0, 0.1, 1.0],
        uids=["a", "b", "c"],
        sources=["arith", "arith", "gsm8k"],
        answers=["46", "4", "7"],
        n=1,
    )
    assert m["val-core/arith/acc/mean@1"] == pytest.approx(0.5)
    assert m["val-core/gsm8k/acc/mean@1"] == 1.0
    assert m["val-aux/arith/reward/mean@1"] == pytest.approx(0.55)
    assert not any("@1/" in k or "std@1" in k for k in m)  # best/worst/maj only for n > 1


def test_validation_at_k_mean_best_worst_maj() -> None:
    # prompt p0: acc (1, 0, 1) answers (7, 8, 7) -> mean 2/3, best 1, worst 0, majority "7" correct
    # prompt p1: acc (0, 0, 1) answers (5, 5, 6) -> mean 1/3, best 1, worst 0, majority "5" wrong
    m = validation_metrics(
        acc=[1.0, 0.0, 1.0, 0.0, 0.0, 1.0],
        scores=[1.0, 0.0, 1.0, 0.0, 0.0, 1.0],
        uids=["p0"] * 3 + ["p1"] * 3,
        sources=["arith"] * 6,
        answers=["7", "8", "7", "5", "5", "6"],
        n=3,
    )
    assert m["val-core/arith/acc/mean@3"] == pytest.approx(0.5)
    assert m["val-core/arith/acc/best@3/mean"] == pytest.approx(1.0)
    assert m["val-core/arith/acc/maj@3/mean"] == pytest.approx(0.5)
    assert m["val-aux/arith/acc/worst@3/mean"] == pytest.approx(0.0)
    # std over a prompt's samples: sqrt(2/9) for both
    assert m["val-aux/arith/acc/std@3"] == pytest.approx((2 / 9) ** 0.5)


def test_group_ids_follow_first_appearance() -> None:
    assert group_ids(["b", "b", "a", "c", "a"]).tolist() == [0, 0, 1, 2, 1]


def test_console_line_shows_the_headline_metrics() -> None:
    line = format_console_line(3, {"critic/score/mean": 0.25, "val-core/arith/acc/mean@1": 0.5, "actor/lr": 1e-3})
    assert line.startswith("step 3") and "critic/score/mean=0.25" in line and "val-core/arith/acc/mean@1=0.5" in line
    assert "actor/lr" not in line


def test_multi_turn_lengths_count_observations_and_agent_metrics() -> None:
    """A response with an observation inside (loss mask 0, attention 1) has its full length in response_length;
    agent/* come from the per-sample agent tensors."""
    # Row 0: 2 model tokens, 2 observation tokens, 1 model token (the budget of 5: clipped); row 1: 2 model tokens.
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0, 0.0]])
    attention = torch.tensor([[0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]])
    zeros = torch.zeros(2, 5)
    batch = Batch(
        {
            "response_mask": mask,
            "attention_mask": attention,
            "token_level_scores": zeros,
            "token_level_rewards": zeros,
            "advantages": zeros,
            "returns": zeros,
            "env_rewards": torch.tensor([1.0, -0.1]),
            "agent_num_turns": torch.tensor([2.0, 1.0]),
            "agent_tool_calls": torch.tensor([1.0, 0.0]),
            "agent_tool_errors": torch.tensor([1.0, 0.0]),
            "agent_tool_timeouts": torch.tensor([0.0, 0.0]),
            "agent_finish_answer": torch.tensor([0.0, 1.0]),
            "agent_finish_length": torch.tensor([1.0, 0.0]),
            "agent_tools_s": torch.tensor([0.25, 0.75]),
        }
    )
    m = data_metrics(batch)
    assert (m["response_length/mean"], m["response_length/max"]) == (3.5, 5.0)
    assert m["response_length/clip_ratio"] == 0.5
    assert (m["prompt_length/mean"], m["prompt_length/min"]) == (1.5, 1.0)
    assert m["agent/num_turns/mean"] == 1.5 and m["agent/num_turns/max"] == 2.0
    assert m["agent/tool_calls/mean"] == 0.5 and m["agent/tool_errors"] == 1.0 and m["agent/tool_timeouts"] == 0.0
    assert m["agent/finish/answer"] == 0.5 and m["agent/finish/length"] == 1.0 / 2
    assert m["agent/env_reward/mean"] == pytest.approx(0.45)
    assert m["agent/model_tokens/mean"] == 2.5
    assert m["timing_s/tools"] == 0.75  # the slowest rank's
