"""rlhf.data.tokenize: prompt ids through a real (tiny, character-level) tokenizer's chat template."""

import pytest
import torch
from tokenizer_util import build_char_tokenizer

from rlhf.data import encode_prompts, make_arith_rows
from rlhf.data.tokenize import _as_token_lists


def test_encode_prompts_matches_characters():
    tokenizer = build_char_tokenizer()
    rows = make_arith_rows(20, seed=0)
    ids = encode_prompts(rows, tokenizer, max_prompt_length=16)
    for row, seq in zip(rows, ids, strict=True):
        assert all(isinstance(t, int) for t in seq)
        assert tokenizer.decode(seq) == row["prompt"][0]["content"]


def test_prompt_key():
    rows = [{"question": [{"role": "user", "content": "7*6="}]}]
    assert encode_prompts(rows, build_char_tokenizer(), 8, prompt_key="question") == [
        build_char_tokenizer().encode("7*6=")
    ]


def test_too_long_names_row():
    rows = make_arith_rows(3, seed=0) + [{"prompt": [{"role": "user", "content": "1" * 9}]}]
    with pytest.raises(ValueError, match=r"row 3 has 9 tokens > data.max_prompt_length=8"):
        encode_prompts(rows, build_char_tokenizer(), max_prompt_length=8)


def test_normalises_every_return_shape():
    expected = [[1, 2], [3, 4]]
    assert _as_token_lists([[1, 2], [3, 4]], 2) == expected
    assert _as_token_lists({"input_ids": [[1, 2], [3, 4]], "attention_mask": [[1, 1], [1, 1]]}, 2) == expected
    assert _as_token_lists({"input_ids": torch.tensor(expected)}, 2) == expected
