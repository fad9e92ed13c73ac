"""rlhf.data.loader: epoch coverage, determinism and exact resume."""

import pytest

from rlhf.data import PromptDataLoader

ROWS = [{"id": i} for i in range(10)]


def _ids(batch):
    return [row["id"] for row in batch]


def _take(loader, num_batches):
    return [_ids(loader.next_batch()) for _ in range(num_batches)]


@pytest.mark.parametrize("shuffle", [True, False])
def test_epoch_covers_rows_once(shuffle):
    loader = PromptDataLoader(ROWS, 5, shuffle=shuffle, seed=0)
    assert len(loader) == 2
    first, second = _take(loader, 2), _take(loader, 2)
    assert sorted(sum(first, [])) == list(range(10))
    assert sorted(sum(second, [])) == list(range(10))
    assert (first != second) == shuffle  # a new permutation per epoch
    assert loader.state_dict() == {"epoch": 1, "index": 2, "seed": 0}


def test_drop_last():
    loader = PromptDataLoader(ROWS, 4, shuffle=True, seed=3)
    assert len(loader) == 2
    epoch = _take(loader, 2)
    assert [len(b) for b in epoch] == [4, 4]
    assert len(set(sum(epoch, []))) == 8

    loader = PromptDataLoader(ROWS, 4, shuffle=True, seed=3, drop_last=False)
    assert len(loader) == 3
    epoch = _take(loader, 3)
    assert [len(b) for b in epoch] == [4, 4, 2]
    assert sorted(sum(epoch, [])) == list(range(10))


def test_deterministic_given_seed():
    assert _take(PromptDataLoader(ROWS, 3, shuffle=True, seed=7), 9) == _take(
        PromptDataLoader(ROWS, 3, shuffle=True, seed=7), 9
    )
    assert _take(PromptDataLoader(ROWS, 3, shuffle=True, seed=7), 9) != _take(
        PromptDataLoader(ROWS, 3, shuffle=True, seed=8), 9
    )
    assert _take(PromptDataLoader(ROWS, 5, shuffle=False, seed=0), 2) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


@pytest.mark.parametrize("cut", [0, 1, 2, 3, 4, 7])  # 3 batches per epoch: 3 and 6 are epoch boundaries
@pytest.mark.parametrize("drop_last", [True, False])
def test_resume_is_exact(cut, drop_last):
    reference = _take(PromptDataLoader(ROWS, 4, shuffle=True, seed=5, drop_last=drop_last), 12)
    original = PromptDataLoader(ROWS, 4, shuffle=True, seed=5, drop_last=drop_last)
    assert _take(original, cut) == reference[:cut]
    state = original.state_dict()
    resumed = PromptDataLoader(ROWS, 4, shuffle=True, seed=999, drop_last=drop_last)  # the state's seed wins
    resumed.load_state_dict(state)
    assert _take(resumed, 12 - cut) == reference[cut:]


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"data.train_batch_size=11 is larger than the dataset \(10 rows\)"):
        PromptDataLoader(ROWS, 11, shuffle=True, seed=0)
    assert len(PromptDataLoader(ROWS, 11, shuffle=True, seed=0, drop_last=False)) == 1
    with pytest.raises(ValueError, match="must be >= 1"):
        PromptDataLoader(ROWS, 0, shuffle=True, seed=0)
    with pytest.raises(ValueError, match="empty"):
        PromptDataLoader([], 1, shuffle=True, seed=0, drop_last=False)
    loader = PromptDataLoader(ROWS, 5, shuffle=True, seed=0)
    with pytest.raises(ValueError, match="does not fit"):
        loader.load_state_dict({"epoch": 0, "index": 3, "seed": 0})
    with pytest.raises(ValueError, match="missing keys"):
        loader.load_state_dict({"epoch": 0})
