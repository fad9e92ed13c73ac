"""rlhf.data.arith: the built-in arithmetic task and its cached parquet files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.data import check_columns, ensure_arith_dataset, load_rows, make_arith_rows

REPO_ROOT = Path(__file__).resolve().parents[2]


def _content(row):
    return row["prompt"][0]["content"]


def _check_answer(row):
    text = _content(row)
    assert text.endswith("=")
    for op, fn in (("+", int.__add__), ("-", int.__sub__), ("*", int.__mul__)):
        if op in text:
            a, b = text[:-1].split(op)
            assert row["reward_model"]["ground_truth"] == str(fn(int(a), int(b)))
            return
    raise AssertionError(f"no operator in {text!r}")


def test_rows_are_verl_rows_with_correct_answers():
    rows = make_arith_rows(300, seed=0, min_digits=1, max_digits=3, ops=("+", "-", "*"))
    check_columns(rows, "arith")
    for row in rows:
        assert row["data_source"] == "arith"
        assert row["reward_model"]["style"] == "rule"
        _check_answer(row)
        assert int(row["reward_model"]["ground_truth"]) >= 0
    assert {op for row in rows for op in "+-*" if op in _content(row)} == {"+", "-", "*"}
    assert len({_content(row) for row in rows}) == 300


def test_digits_range():
    rows = make_arith_rows(200, seed=1, min_digits=2, max_digits=2)
    for row in rows:
        a, b = _content(row)[:-1].split("+")
        assert 10 <= int(a) <= 99 and 10 <= int(b) <= 99


def test_deterministic_given_seed():
    assert make_arith_rows(50, seed=3) == make_arith_rows(50, seed=3)
    assert make_arith_rows(50, seed=3) != make_arith_rows(50, seed=4)


def test_dense_request_and_too_many():
    rows = make_arith_rows(100, seed=0, min_digits=1, max_digits=1)  # every one of the 100 problems
    assert len({_content(row) for row in rows}) == 100
    with pytest.raises(ValueError, match="only 100 distinct problems"):
        make_arith_rows(101, seed=0, min_digits=1, max_digits=1)
    with pytest.raises(ValueError, match="ops"):
        make_arith_rows(1, seed=0, ops=("/",))


def test_ensure_dataset_disjoint_reused_and_regenerated(tmp_path):
    train_path, val_path = ensure_arith_dataset(tmp_path, num_train=200, num_val=50, seed=0)
    train, val = load_rows(train_path), load_rows(val_path)
    assert (len(train), len(val)) == (200, 50)
    assert not {_content(r) for r in train} & {_content(r) for r in val}
    for row in train + val:
        _check_answer(row)
    assert json.loads((tmp_path / "arith_meta.json").read_text())["num_train"] == 200

    mtime = Path(train_path).stat().st_mtime_ns
    assert ensure_arith_dataset(tmp_path, num_train=200, num_val=50, seed=0) == (train_path, val_path)
    assert Path(train_path).stat().st_mtime_ns == mtime  # reused, not rewritten

    ensure_arith_dataset(tmp_path, num_train=200, num_val=50, seed=1)
    assert load_rows(train_path) != train
    ensure_arith_dataset(tmp_path, num_train=120, num_val=50, seed=1, ops=("+", "-"))
    assert len(load_rows(train_path)) == 120


def test_cli(tmp_path):
    out = tmp_path / "arith"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "rlhf.data.arith",
            "--out",
            str(out),
            "--num-train",
            "30",
            "--num-val",
            "10",
            "--ops",
            "+-",
        ],
        check=True,
        cwd=REPO_ROOT,
        capture_output=True,
    )
    assert len(load_rows(out / "train.parquet")) == 30
    assert len(load_rows(out / "val.parquet")) == 10
