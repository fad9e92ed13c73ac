"""Built-in agent tasks: calc rows with verl's tool columns and an SFT trace, guessing-game rows, cached files."""

import json
from pathlib import Path

import pytest

from rlhf.agent.parsing import HermesToolParser
from rlhf.agent.tools import load_tools
from rlhf.data import load_rows
from rlhf.data.agent_tasks import ensure_task_dataset, make_calc_rows, make_guess_rows
from rlhf.rewards.registry import default_reward_fn


def test_calc_rows_carry_the_tool_columns_and_a_trace_that_runs() -> None:
    rows = make_calc_rows(50, seed=3, min_digits=3, max_digits=3)
    assert len({r["prompt"][0]["content"] for r in rows}) == 50  # distinct problems
    calculator = load_tools(["calculator"]).get("calculator")
    for row in rows:
        a, b = map(int, row["prompt"][0]["content"].rstrip("=").split("*"))
        assert 100 <= a <= 999 and 100 <= b <= 999
        answer = row["reward_model"]["ground_truth"]
        assert answer == str(a * b) and row["data_source"] == "calc" and row["tools"] == ["calculator"]
        assert row["extra_info"]["tools_kwargs"]["calculator"]["create_kwargs"]["ground_truth"] == answer
        call, result, final = row["response"]
        parsed = HermesToolParser().parse(call["content"])
        assert [c.name for c in parsed.calls] == ["calculator"] and not parsed.errors
        assert calculator.fn(**parsed.calls[0].arguments) == result["content"] == answer  # the trace is true
        assert (call["role"], result["role"], final["role"]) == ("assistant", "tool", "assistant")
        assert final["content"] == answer
        assert default_reward_fn("calc")("calc", final["content"], answer) == 1.0
    assert make_calc_rows(50, seed=3, min_digits=3, max_digits=3) == rows  # deterministic


def test_guess_rows_hold_the_target() -> None:
    rows = make_guess_rows(100, seed=0, high=9)
    targets = [r["extra_info"]["target"] for r in rows]
    assert set(targets) <= set(range(10)) and len(set(targets)) > 5
    for row, target in zip(rows, targets, strict=True):
        assert row["reward_model"]["ground_truth"] == str(target) and (
            row["extra_info"]["low"],
            row["extra_info"]["high"],
        ) == (0, 9)
    assert default_reward_fn("guess_number")("guess_number", "I guess 3, no: 7", "7") == 1.0


def test_ensure_writes_disjoint_splits_once(tmp_path: Path) -> None:
    train, val = ensure_task_dataset("calc", tmp_path, 30, 10, seed=1, min_digits=2, max_digits=3)
    train_rows, val_rows = load_rows(train), load_rows(val)
    assert (len(train_rows), len(val_rows)) == (30, 10)
    prompts = lambda rows: {r["prompt"][0]["content"] for r in rows}  # noqa: E731
    assert not prompts(train_rows) & prompts(val_rows)
    assert train_rows[0]["response"][1] == {
        "role": "tool",
        "name": "calculator",
        "content": train_rows[0]["reward_model"]["ground_truth"],
    }
    assert val_rows[0]["extra_info"]["split"] == "val"
    stamp = Path(train).stat().st_mtime_ns
    assert ensure_task_dataset("calc", tmp_path, 30, 10, seed=1, min_digits=2, max_digits=3) == (train, val)
    assert Path(train).stat().st_mtime_ns == stamp  # reused
    ensure_task_dataset("guess_number", tmp_path, 30, 10, seed=1, min_digits=1, max_digits=2)
    assert json.loads((tmp_path / "task_meta.json").read_text())["task"] == "guess_number"
    assert all(0 <= r["extra_info"]["target"] <= 99 for r in load_rows(train))


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="min_digits <= max_digits"):
        make_calc_rows(5, seed=0, min_digits=3, max_digits=2)
    with pytest.raises(ValueError, match="raise the digits"):
        make_calc_rows(100, seed=0, min_digits=1, max_digits=1)
    with pytest.raises(ValueError, match="unknown agent task 'chess'"):
        ensure_task_dataset("chess", "/tmp/x", 1, 1, 0, 1, 1)
