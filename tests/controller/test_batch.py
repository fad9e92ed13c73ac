import pytest
import torch

from rlhf.batch import Batch


def make_batch(n: int = 5) -> Batch:
    return Batch(
        {"input_ids": torch.arange(n * 3).view(n, 3), "advantages": torch.randn(n, 2)},
        {"uid": [f"u{i}" for i in range(n)], "ground_truth": [str(i) for i in range(n)]},
        {"step": 7},
    )


def assert_same(a: Batch, b: Batch) -> None:
    assert set(a.tensors) == set(b.tensors) and set(a.non_tensors) == set(b.non_tensors)
    for k in a.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]), k
    assert a.non_tensors == b.non_tensors
    assert a.meta == b.meta


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_split_concat_round_trip(k: int) -> None:
    batch = make_batch(5)
    chunks = batch.split(k)
    assert len(chunks) == k
    assert sorted(len(c) for c in chunks) == sorted([5 // k + (1 if i < 5 % k else 0) for i in range(k)])
    assert_same(Batch.concat(chunks), batch)


def test_split_sizes_differ_by_at_most_one() -> None:
    assert [len(c) for c in make_batch(7).split(3)] == [3, 2, 2]


def test_mismatched_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="disagree on the batch size"):
        Batch({"a": torch.zeros(3)}, {"b": [1, 2]})
    batch = make_batch(3)
    with pytest.raises(ValueError, match="batch size 4"):
        batch["x"] = torch.zeros(4)


def test_index_select_repeat() -> None:
    batch = make_batch(4)
    picked = batch.index(torch.tensor([True, False, True, False]))
    assert picked.non_tensors["uid"] == ["u0", "u2"]
    assert torch.equal(picked["input_ids"], batch["input_ids"][[0, 2]])
    rep = batch.select(["uid", "input_ids"]).repeat_interleave(2)
    assert rep.non_tensors["uid"] == ["u0", "u0", "u1", "u1", "u2", "u2", "u3", "u3"]
    assert torch.equal(rep["input_ids"][2], batch["input_ids"][1])
    assert set(rep.tensors) == {"input_ids"}
    with pytest.raises(KeyError, match="nope"):
        batch.select(["nope"])


def test_concat_rejects_different_fields() -> None:
    a = make_batch(2)
    b = make_batch(2).select(["input_ids", "uid"])
    with pytest.raises(ValueError, match="different fields"):
        Batch.concat([a, b])


def test_chunk_by_size_and_update() -> None:
    batch = make_batch(5)
    assert [len(c) for c in batch.chunk_by_size(2)] == [2, 2, 1]
    batch.update(Batch({"values": torch.ones(5, 2)}))
    assert "values" in batch
    with pytest.raises(ValueError):
        batch.update(Batch({"values": torch.ones(4, 2)}))
