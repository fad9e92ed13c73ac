"""rlhf.prompts: which data files a run reads, and rows to prompt Batches with a configurable prompt column."""

import pytest

from rlhf.config import DataConfig
from rlhf.data import write_rows
from rlhf.models.tiny import build_tokenizer
from rlhf.prompts import load_split, resolve_data_files, rows_to_batch


def _row(content: str, prompt_key: str = "prompt") -> dict:
    return {
        prompt_key: [{"role": "user", "content": content}],
        "reward_model": {"ground_truth": "2"},
        "data_source": "arith",
    }


def test_data_files_as_one_string_or_a_list():
    # verl users write `data.train_files=path.parquet`; Hydra lists work as before
    config = DataConfig(train_files="train.parquet", val_files="val.parquet")  # type: ignore[arg-type]
    assert resolve_data_files(config, seed=1) == (["train.parquet"], ["val.parquet"])
    config = DataConfig(train_files=["a.parquet", "b.jsonl"], val_files=[])
    assert resolve_data_files(config, seed=1) == (["a.parquet", "b.jsonl"], [])
    with pytest.raises(ValueError, match="data.val_files='' is empty"):
        resolve_data_files(DataConfig(train_files=["a.parquet"], val_files=""), seed=1)  # type: ignore[arg-type]


def test_prompt_key_reaches_loading_and_batching(tmp_path):
    path = tmp_path / "train.jsonl"
    write_rows([_row("1+1=", prompt_key="question"), _row("10+10=", prompt_key="question")], path)
    tokenizer = build_tokenizer()
    rows = load_split([str(path)], tokenizer, max_prompt_length=5, prompt_key="question")
    assert [row["question"][0]["content"] for row in rows] == ["1+1="]  # "10+10=" is 6 tokens > 5: dropped
    batch = rows_to_batch(rows, tokenizer, 5, batch_index=0, seed=1, prompt_key="question")
    assert batch.non_tensors["prompt_ids"] == [tokenizer.encode("1+1=")]
    with pytest.raises(ValueError, match=r"missing column 'prompt'.*data.prompt_key='prompt'"):
        load_split([str(path)], tokenizer, max_prompt_length=5)
