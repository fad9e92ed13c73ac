"""The learning-rate schedule inside a real DeepSpeed engine (1 gloo rank): the lr each optimizer step runs at,
against hand-computed values, and the schedule's position surviving a checkpoint (exact resume)."""

from __future__ import annotations

import os

os.environ["DS_ACCELERATOR"] = "cpu"  # before DeepSpeed is imported

import math  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from rlhf.workers.base import free_port, leave_distributed  # noqa: E402
from rlhf.workers.engine import build_engine, deepspeed_config, load_engine, lr_schedule, save_engine  # noqa: E402

from rlhf.config import OptimConfig  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_rank_world() -> Iterator[None]:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    leave_distributed()  # through DeepSpeed, so its cached world group does not outlive this world


def engine_for(optim: OptimConfig, total_steps: int):  # noqa: ANN201
    torch.manual_seed(0)
    config = deepspeed_config(optim, mini_batch_seqs=2, micro_batch_size=2, world_size=1, zero_stage=1, dtype="float32")
    return build_engine(torch.nn.Linear(4, 1), config, lr_scheduler=lr_schedule(optim, total_steps))


def run_steps(engine, steps: int) -> list[float]:  # noqa: ANN001
    """The lr each of `steps` optimizer steps runs at (read from the optimizer just before the step)."""
    lrs = []
    for _ in range(steps):
        loss = engine(torch.ones(2, 4)).pow(2).mean()
        engine.backward(loss)
        lrs.append(engine.optimizer.param_groups[0]["lr"])
        engine.step()
    return lrs


def cosine(peak: float, min_ratio: float, progress: float) -> float:
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def test_constant_without_warmup_has_no_scheduler() -> None:
    assert lr_schedule(OptimConfig(lr=1.0), 8) is None


@pytest.mark.parametrize(
    ("optim", "expected"),
    [
        # warm-up 4 from 0, then the peak
        (OptimConfig(lr=2.0, warmup_steps=4), [0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]),
        # cosine over 8 steps to 0.1 x peak, no warm-up: the first step runs at the peak, step 8 at the floor
        (
            OptimConfig(lr=1.0, lr_schedule="cosine", min_lr_ratio=0.1),
            [1.0, 0.96575, 0.86820, 0.72221, 0.55, 0.37779, 0.23180, 0.13425, 0.1],
        ),
        # warm-up 2 (0, 0.5), then the cosine over the remaining 6 steps
        (
            OptimConfig(lr=1.0, warmup_steps=2, lr_schedule="cosine", min_lr_ratio=0.1),
            [0.0, 0.5, 1.0, cosine(1, 0.1, 1 / 6), 0.775, 0.55, 0.325, cosine(1, 0.1, 5 / 6), 0.1],
        ),
    ],
)
def test_engine_runs_each_step_at_the_scheduled_lr(optim: OptimConfig, expected: list[float]) -> None:
    lrs = run_steps(engine_for(optim, total_steps=8), len(expected))
    assert lrs == pytest.approx(expected, abs=1e-5)


def test_schedule_position_survives_a_checkpoint(tmp_path: Path) -> None:
    optim = OptimConfig(lr=1.0, warmup_steps=2, lr_schedule="cosine", min_lr_ratio=0.1)
    straight = run_steps(engine_for(optim, 8), 8)
    first = engine_for(optim, 8)
    before = run_steps(first, 3)
    generator = torch.Generator()
    save_engine(first, tmp_path, 0, generator)
    resumed = engine_for(optim, 8)
    load_engine(resumed, tmp_path, 0, generator)
    assert before + run_steps(resumed, 5) == pytest.approx(straight, abs=1e-7)
