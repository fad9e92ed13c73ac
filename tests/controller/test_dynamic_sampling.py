"""DAPO's dynamic sampling on hand-built scored batches: which groups an update gets, and the dapo/* counts."""

from __future__ import annotations

import torch

from rlhf.batch import Batch
from rlhf.dynamic_sampling import fill_with_informative_groups


def scored(groups: dict[str, list[float]]) -> Batch:
    """Two responses per prompt uid; each response's score on its last (only) token."""
    uids = [u for u, scores in groups.items() for _ in scores]
    scores = [s for group in groups.values() for s in group]
    return Batch({"token_level_scores": torch.tensor(scores).unsqueeze(-1)}, {"uid": uids})


def test_generates_until_enough_groups_carry_a_signal() -> None:
    more = iter([scored({"c": [1.0, 0.0], "d": [0.0, 0.0]})])
    batch, metrics = fill_with_informative_groups(scored({"a": [1.0, 1.0], "b": [0.0, 1.0]}), lambda: next(more), 2, 0)
    assert batch.non_tensors["uid"] == ["b", "b", "c", "c"]
    assert batch["token_level_scores"].squeeze(-1).tolist() == [0.0, 1.0, 1.0, 0.0]
    assert metrics == {"dapo/num_gen_batches": 2.0, "dapo/num_dropped_groups": 2.0, "dapo/num_filled_groups": 0.0}


def test_a_generation_limit_fills_the_batch_with_dropped_groups() -> None:
    def never() -> Batch:
        raise AssertionError("max_num_gen_batches=1 allows no second generation")

    batch, metrics = fill_with_informative_groups(scored({"a": [1.0, 1.0], "b": [0.0, 1.0]}), never, 2, 1)
    assert batch.non_tensors["uid"] == ["b", "b", "a", "a"]  # informative first, then the dropped group
    assert metrics == {"dapo/num_gen_batches": 1.0, "dapo/num_dropped_groups": 1.0, "dapo/num_filled_groups": 1.0}


def test_extra_informative_groups_beyond_the_target_are_left_out() -> None:
    batch, metrics = fill_with_informative_groups(
        scored({"a": [0.0, 1.0], "b": [1.0, 0.0], "c": [0.5, 0.0]}), lambda: scored({}), 2, 0
    )
    assert batch.non_tensors["uid"] == ["a", "a", "b", "b"]
    assert metrics["dapo/num_gen_batches"] == 1.0 and metrics["dapo/num_filled_groups"] == 0.0
