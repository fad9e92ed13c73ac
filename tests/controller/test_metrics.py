import pytest
import torch

from rlhf.batch import Batch
from rlhf.metrics import data_metrics, logprob_diff_metrics, throughput_metrics, validation_metrics
from rlhf.tracking import format_console_line
from rlhf.trainer import group_ids


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
    m = throughput_metrics(batch, step_time_s=0.5, num_devices=2, num_params=10, device_name="cpu")
    assert m["perf/throughput"] == pytest.approx(5 / 0.5 / 2)
    assert "perf/mfu/actor" not in m  # no known peak for a CPU
    gpu = throughput_metrics(batch, 0.5, 2, 10**9, "NVIDIA H100 80GB HBM3")
    assert gpu["perf/mfu/actor"] == pytest.approx(8 * 10**9 * 5 / 0.5 / 2 / 989e12)


def test_validation_accuracy_per_source() -> None:
    batch = Batch(
        {"token_level_scores": torch.tensor([[1.0], [0.0], [1.0]])},
        {"data_source": ["arith", "arith", "gsm8k"]},
    )
    m = validation_metrics(batch)
    assert m["val/arith/acc/mean@1"] == pytest.approx(0.5)
    assert m["val/gsm8k/acc/mean@1"] == 1.0


def test_group_ids_follow_first_appearance() -> None:
    assert group_ids(["b", "b", "a", "c", "a"]).tolist() == [0, 0, 1, 2, 1]


def test_console_line_shows_the_headline_metrics() -> None:
    line = format_console_line(3, {"critic/score/mean": 0.25, "val/arith/acc/mean@1": 0.5, "actor/lr": 1e-3})
    assert line.startswith("step 3") and "critic/score/mean=0.25" in line and "val/arith/acc/mean@1=0.5" in line
    assert "actor/lr" not in line


def test_sampled_validation_pass_and_mean_at_k() -> None:
    from rlhf.metrics import sampled_validation_metrics

    # prompt p0: samples (1, 0) -> pass, mean 0.5; prompt p1: (0, 0) -> fail, mean 0.
    batch = Batch(
        {"token_level_scores": torch.tensor([[1.0], [0.0], [0.0], [0.0]])},
        {"uid": ["p0", "p0", "p1", "p1"], "data_source": ["arith"] * 4},
    )
    m = sampled_validation_metrics(batch, k=2)
    assert m["val/arith/acc/pass@2"] == pytest.approx(0.5)
    assert m["val/arith/acc/mean@2"] == pytest.approx(0.25)
