"""rlhf.data.rows: reading and writing verl rows, and the column check."""

import pytest

from rlhf.data import check_columns, load_rows, write_rows


def _rows():
    return [
        {
            "prompt": [{"role": "user", "content": f"{i}+1="}],
            "reward_model": {"ground_truth": str(i + 1), "style": "rule"},
            "data_source": "arith",
            "extra_info": {"index": i, "split": "train"},
        }
        for i in range(5)
    ]


@pytest.mark.parametrize("name", ["rows.parquet", "rows.jsonl", "rows.json"])
def test_write_then_load_round_trips(tmp_path, name):
    rows = _rows()
    path = tmp_path / "sub" / name
    write_rows(rows, path)
    assert load_rows(path) == rows
    assert load_rows(str(path)) == rows


def test_parquet_takes_columns_from_every_row(tmp_path):
    rows = _rows()
    del rows[0]["extra_info"]  # pa.Table.from_pylist would take its columns from this first row only
    write_rows(rows, tmp_path / "rows.parquet")
    loaded = load_rows(tmp_path / "rows.parquet")
    assert loaded[0]["extra_info"] is None
    assert loaded[1:] == rows[1:]


def test_parquet_stores_empty_extra_info(tmp_path):
    rows = _rows()
    for row in rows:
        row["extra_info"] = {}
    write_rows(rows, tmp_path / "rows.parquet")
    assert [row["extra_info"] for row in load_rows(tmp_path / "rows.parquet")] == [None] * 5


def test_parquet_mixed_types_name_column(tmp_path):
    rows = _rows()
    rows[1]["reward_model"]["ground_truth"] = 2
    with pytest.raises(ValueError, match=r"column 'reward_model' to .*rows\.parquet: its values have mixed types"):
        write_rows(rows, tmp_path / "rows.parquet")


def test_json_array_file(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[{"a": 1}, {"a": 2}]')
    assert load_rows(path) == [{"a": 1}, {"a": 2}]


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(ValueError, match=r"rows\.jsonl, line 3"):
        load_rows(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        load_rows(tmp_path / "nope.parquet")


def test_unknown_extension(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n")
    with pytest.raises(ValueError, match=r"rows\.csv has unknown extension '\.csv'"):
        load_rows(path)
    with pytest.raises(ValueError, match="unknown extension"):
        write_rows(_rows(), tmp_path / "rows.txt")


def test_check_columns_accepts_complete_rows(tmp_path):
    check_columns(_rows(), tmp_path / "rows.parquet")


def test_missing_column_names_column_and_file(tmp_path):
    rows = _rows()
    for row in rows:
        del row["reward_model"]["ground_truth"]
    path = tmp_path / "train.parquet"
    write_rows(rows, path)
    expected = (
        f"data file {path} is missing column 'reward_model.ground_truth' "
        "(found columns: ['data_source', 'extra_info', 'prompt', 'reward_model', 'reward_model.style'])"
    )
    with pytest.raises(ValueError) as info:
        check_columns(load_rows(path), path)
    assert str(info.value) == expected


def test_missing_prompt_key_suggests_config(tmp_path):
    with pytest.raises(ValueError, match=r"missing column 'question'.*data\.prompt_key"):
        check_columns(_rows(), "train.jsonl", prompt_key="question")
    with pytest.raises(ValueError, match="train.jsonl has no rows"):
        check_columns([], "train.jsonl")
