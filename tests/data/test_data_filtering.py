"""rlhf.data.filtering: dropping unusable rows, with counts per reason."""

import logging

import pytest
from tokenizer_util import build_char_tokenizer

from rlhf.data import filter_rows, load_prompt_rows, write_rows


def _row(content="1+1=", ground_truth="2", data_source="arith"):
    return {
        "prompt": [{"role": "user", "content": content}],
        "reward_model": {"ground_truth": ground_truth, "style": "rule"},
        "data_source": data_source,
    }


def test_counts_per_reason(caplog):
    good = [_row(), _row("22+3=", "25")]
    rows = good + [
        {"reward_model": {"ground_truth": "1"}, "data_source": "arith"},  # no prompt
        _row(content="   "),  # empty
        {**_row(), "prompt": []},  # empty
        {**_row(), "prompt": "1+1="},  # a string, not chat messages
        {**_row(), "reward_model": {"style": "rule"}},  # no ground truth
        _row(data_source=""),
        _row(content="1" * 9),  # 9 tokens > 8
        _row(content="1" * 20),
    ]
    with caplog.at_level(logging.INFO, logger="rlhf.data.filtering"):
        kept, counts = filter_rows(rows, "train.parquet", build_char_tokenizer(), max_prompt_length=8)
    assert kept == good
    assert kept[0] is good[0]
    assert counts == {
        "missing_prompt": 1,
        "empty_prompt": 2,
        "malformed_prompt": 1,
        "missing_ground_truth": 1,
        "missing_data_source": 1,
        "prompt_too_long": 2,
    }
    assert len(caplog.records) == 1
    assert "train.parquet: kept 2 of 10 rows" in caplog.text
    assert "prompt_too_long=2" in caplog.text


def test_nothing_dropped_and_no_tokenizer():
    rows = [_row(content="1" * 100)]
    kept, counts = filter_rows(rows, "x.jsonl", None, max_prompt_length=8)
    assert kept == rows
    assert counts == {}


def test_length_limit_is_inclusive():
    kept, counts = filter_rows([_row(content="1" * 8)], "x.jsonl", build_char_tokenizer(), max_prompt_length=8)
    assert len(kept) == 1 and counts == {}


def test_empty_result_names_file_and_counts():
    rows = [_row(content="1" * 20), _row(content="")]
    with pytest.raises(ValueError, match=r"val\.jsonl: no rows left .* empty_prompt=1, prompt_too_long=1"):
        filter_rows(rows, "val.jsonl", build_char_tokenizer(), max_prompt_length=8)


def test_load_prompt_rows(tmp_path):
    path = tmp_path / "train.jsonl"
    write_rows([_row(), _row(content="1" * 20)], path)
    assert load_prompt_rows(path, build_char_tokenizer(), 8) == [_row()]
