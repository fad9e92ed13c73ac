"""Splitting a rank's rows into micro-batches (fixed-size or by token budget) and putting results back in order."""

from __future__ import annotations

import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch  # noqa: E402
from rlhf.workers.update_loop import forward_micro_batches, split_micro_batches  # noqa: E402

from rlhf.batch import Batch  # noqa: E402


def batch_of_lengths(lengths: list[int]) -> Batch:
    width = max(lengths)
    mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])
    return Batch({"attention_mask": mask, "row": torch.arange(len(lengths))})


def test_fixed_size_chunks_keep_order() -> None:
    parts = split_micro_batches(batch_of_lengths([3, 5, 2, 7, 4]), 2, None, "trim", world_size=1)
    assert [group for group, _ in parts] == [[0, 1], [2, 3], [4]]
    assert [micro["row"].tolist() for _, micro in parts] == [[0, 1], [2, 3], [4]]


def test_token_budget_bounds_the_processed_tokens() -> None:
    lengths = [10, 3, 7, 2, 9, 4, 8, 1]
    batch = batch_of_lengths(lengths)
    for layout, cost in (
        ("trim", lambda g: len(g) * max(lengths[i] for i in g)),
        ("pack", lambda g: sum(lengths[i] for i in g)),
    ):
        parts = split_micro_batches(batch, 2, 20, layout, world_size=1)
        groups = [group for group, _ in parts]
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))  # every row exactly once
        assert all(cost(g) <= 20 for g in groups), (layout, groups)
        assert len(groups) < len(lengths)  # the budget, not one row each
        for group, micro in parts:
            assert micro["row"].tolist() == group


def test_forward_results_come_back_in_row_order() -> None:
    lengths = [10, 3, 7, 2, 9, 4, 8, 1]
    batch = batch_of_lengths(lengths)
    out = forward_micro_batches(
        batch, lambda micro: {"double": micro["row"] * 2}, size=3, max_tokens=20, layout="trim", world_size=1
    )
    assert out["double"].tolist() == [2 * i for i in range(len(lengths))]
