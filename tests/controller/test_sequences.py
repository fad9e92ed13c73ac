import torch

from rlhf.sequences import assemble


def test_assemble_pads_prompts_left_and_responses_right() -> None:
    batch = assemble([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]], prompt_length=4, response_length=4, pad_id=0)
    assert batch["prompts"].tolist() == [[0, 5, 6, 7], [0, 0, 0, 8]]
    assert batch["responses"].tolist() == [[1, 2, 0, 0], [3, 4, 9, 0]]
    assert batch["input_ids"].tolist() == [[0, 5, 6, 7, 1, 2, 0, 0], [0, 0, 0, 8, 3, 4, 9, 0]]
    assert batch["attention_mask"].tolist() == [[0, 1, 1, 1, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1, 1, 0]]
    # Positions count real tokens only, as vLLM sees the unpadded prompt.
    assert batch["position_ids"].tolist() == [[0, 0, 1, 2, 3, 4, 4, 4], [0, 0, 0, 0, 1, 2, 3, 3]]
    assert batch["response_mask"].dtype == torch.float32
    assert batch["response_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 0]]


def test_assemble_handles_an_empty_response() -> None:
    batch = assemble([[5]], [[]], prompt_length=1, response_length=2, pad_id=0)
    assert batch["response_mask"].sum().item() == 0
    assert batch["responses"].tolist() == [[0, 0]]


def test_shards_with_different_prompt_lengths_concatenate() -> None:
    from rlhf.batch import Batch

    a = assemble([[5, 6, 7]], [[1]], prompt_length=5, response_length=2, pad_id=0)
    b = assemble([[8]], [[2, 3]], prompt_length=5, response_length=2, pad_id=0)
    assert Batch.concat([a, b])["input_ids"].shape == (2, 7)


def test_a_prompt_longer_than_the_limit_is_an_error() -> None:
    import pytest

    with pytest.raises(ValueError, match="data.max_prompt_length=2"):
        assemble([[1, 2, 3]], [[4]], prompt_length=2, response_length=1, pad_id=0)
