"""rlhf.data.rows: reading and writing verl rows, and the column check."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from rlhf.data import check_columns, load_rows, normalize_data_files, write_rows


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
    with pytest.raises(ValueError) as info:
        check_columns(_rows(), "train.jsonl", prompt_key="question")
    assert str(info.value) == (
        "data file train.jsonl is missing column 'question' (found columns: ['data_source', 'extra_info', "
        "'prompt', 'reward_model', 'reward_model.ground_truth', 'reward_model.style']); data.prompt_key='question' "
        "names the column holding the chat messages: set it to the file's prompt column"
    )
    with pytest.raises(ValueError, match="train.jsonl has no rows"):
        check_columns([], "train.jsonl")


def test_normalize_data_files():
    assert normalize_data_files("data/train.parquet", "data.train_files") == ["data/train.parquet"]  # verl style
    assert normalize_data_files(["a.parquet", "b.jsonl"], "data.train_files") == ["a.parquet", "b.jsonl"]
    assert normalize_data_files(OmegaConf.create(["a.parquet"]), "data.val_files") == ["a.parquet"]
    assert normalize_data_files([], "data.val_files") == []
    assert normalize_data_files(None, "data.val_files") == []
    with pytest.raises(ValueError, match=r"data.train_files='' is empty"):
        normalize_data_files("", "data.train_files")
    with pytest.raises(ValueError, match=r"data.val_files\[1\]=3 must be a data file path"):
        normalize_data_files(["a.parquet", 3], "data.val_files")


def _load_error(path) -> str:
    with pytest.raises(ValueError) as info:
        load_rows(path)
    return str(info.value)


def test_text_named_parquet(tmp_path):
    path = tmp_path / "train.parquet"
    path.write_text("prompt,answer\n1+1=,2\n")
    assert _load_error(path) == f"data file {path} is not a parquet file (it does not start with b'PAR1': b'prom')"


def test_truncated_parquet(tmp_path):
    path = tmp_path / "train.parquet"
    write_rows(_rows(), path)
    path.write_bytes(path.read_bytes()[:100])
    assert _load_error(path) == f"data file {path} is a truncated or damaged parquet file (no b'PAR1' footer)"


@pytest.mark.parametrize("name", ["train.parquet", "train.jsonl", "train.json"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.touch()
    assert _load_error(path) == f"data file {path} is empty (0 bytes)"


def test_parquet_without_rows(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string()), "data_source": pa.array([], pa.string())}), path)
    assert _load_error(path) == f"data file {path} has no rows"


@pytest.mark.parametrize(("name", "text"), [("train.jsonl", "\n  \n"), ("train.json", "[]")])
def test_json_without_rows(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert _load_error(path) == f"data file {path} has no rows"


def test_parquet_named_jsonl(tmp_path):
    write_rows(_rows(), tmp_path / "rows.parquet")
    path = tmp_path / "rows.jsonl"
    (tmp_path / "rows.parquet").rename(path)
    assert _load_error(path).startswith(f"data file {path} is not UTF-8 text, so not JSON lines")


def test_directory(tmp_path):
    folder = tmp_path / "train.parquet"  # Spark and pandas partitioned writes look like this
    write_rows(_rows(), folder / "part-0.parquet")
    write_rows(_rows(), folder / "part-1.parquet")
    expected = f"data file {folder} is a directory, not a file: list the data files themselves"
    assert _load_error(folder) == expected + " (it holds ['part-0.parquet', 'part-1.parquet'])"
    empty = tmp_path / "data"
    empty.mkdir()
    assert _load_error(empty) == f"data file {empty} is a directory, not a file: list the data files themselves"
