"""Built-in agent tasks as verl rows: multiplication with the calculator tool, and the number-guessing game.

calc: "123*456=" -> "56088". A tiny model cannot multiply 3-digit numbers, but it can learn to call the calculator
and copy its result. Rows carry verl's tool columns (`tools`, `extra_info.tools_kwargs`) and a `response` column
holding a tool-use trace (assistant call, tool result, assistant answer) for an SFT warm-up; SFT trains on the
assistant turns only (rlhf.agent.traces). guess_number: find a hidden number with higher/lower feedback
(agent.env=guess_number), scored by the environment and/or the rule function on the final guess.

    python -m rlhf.data.agent_tasks calc --out data/calc --num-train 2000 --num-val 200 --digits 3
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhf.data.rows import write_rows

logger = logging.getLogger(__name__)

CALC_SOURCE, GUESS_SOURCE = "calc", "guess_number"
CALC_TOOL = "calculator"
# Bump when the generated rows change for the same parameters, so cached datasets are rebuilt.
_FORMAT_VERSION = 1
_META_NAME = "task_meta.json"


def calc_tool_call(expression: str) -> str:
    """The Hermes-format calculator call a trace (and a trained model) writes for `expression` (compact JSON: each
    character is a token of the tiny model)."""
    payload = json.dumps({"name": CALC_TOOL, "arguments": {"expression": expression}}, separators=(",", ":"))
    return f"<tool_call>{payload}</tool_call>"


def calc_trace(expression: str, answer: str) -> list[dict[str, str]]:
    """A tool-use trace: call the calculator, read its result, answer with it."""
    return [
        {"role": "assistant", "content": calc_tool_call(expression)},
        {"role": "tool", "name": CALC_TOOL, "content": answer},
        {"role": "assistant", "content": answer},
    ]


def _operand(rng: random.Random, min_digits: int, max_digits: int) -> int:
    digits = rng.randint(min_digits, max_digits)
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def make_calc_rows(num_rows: int, seed: int, min_digits: int = 3, max_digits: int = 3) -> list[dict[str, Any]]:
    """Distinct multiplication problems a*b as verl rows with the calculator tool and an SFT trace.

    Args:
        num_rows: how many problems (all distinct).
        seed: seeds the generator.
        min_digits, max_digits: operand sizes; each operand's digit count is drawn uniformly from this range.

    Returns:
        Rows like `{"prompt": [{"role": "user", "content": "123*456="}], "reward_model": {"ground_truth": "56088",
        "style": "rule"}, "data_source": "calc", "tools": ["calculator"], "extra_info": {"index": 0,
        "tools_kwargs": {"calculator": {"create_kwargs": {"ground_truth": "56088"}}}}, "response": [trace]}`.

    Raises:
        ValueError: bad digits, or more rows than there are distinct problems.
    """
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"calc: need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
    low = 0 if min_digits == 1 else 10 ** (min_digits - 1)
    num_problems = (10**max_digits - low) ** 2
    if num_rows > num_problems // 2:
        raise ValueError(f"calc: {num_rows} rows requested from {num_problems} problems; raise the digits")
    rng, seen, rows = random.Random(seed), set(), []
    while len(rows) < num_rows:
        a, b = _operand(rng, min_digits, max_digits), _operand(rng, min_digits, max_digits)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        expression, answer = f"{a}*{b}", str(a * b)
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"{expression}="}],
                "reward_model": {"ground_truth": answer, "style": "rule"},
                "data_source": CALC_SOURCE,
                "tools": [CALC_TOOL],
                # verl's per-tool kwargs (create/execute); the calculator has no hidden parameter and ignores them.
                "extra_info": {
                    "index": len(rows),
                    "tools_kwargs": {CALC_TOOL: {"create_kwargs": {"ground_truth": answer}}},
                },
                "response": calc_trace(expression, answer),
            }
        )
    return rows


def make_guess_rows(num_rows: int, seed: int, high: int = 9) -> list[dict[str, Any]]:
    """Guessing-game rows: a hidden integer in [0, high], in `extra_info.target` and as the ground truth.

    Returns:
        Rows like `{"prompt": [{"role": "user", "content": "Guess 0-9:"}], "reward_model": {"ground_truth": "7"},
        "data_source": "guess_number", "extra_info": {"index": 0, "target": 7, "low": 0, "high": 9}}`.
    """
    if high < 1:
        raise ValueError(f"guess_number: high={high} must be >= 1")
    rng = random.Random(seed)
    rows = []
    for i in range(num_rows):
        target = rng.randint(0, high)
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Guess 0-{high}:"}],
                "reward_model": {"ground_truth": str(target), "style": "rule"},
                "data_source": GUESS_SOURCE,
                "extra_info": {"index": i, "target": target, "low": 0, "high": high},
            }
        )
    return rows


def ensure_task_dataset(
    task: str, out_dir: str | Path, num_train: int, num_val: int, seed: int, min_digits: int, max_digits: int
) -> tuple[str, str]:
    """Write `train.parquet` and `val.parquet` of a built-in agent task unless they exist with the same parameters.

    Train and validation never share a problem (calc: one pool of distinct problems is split).

    Args:
        task: "calc" or "guess_number".
        min_digits, max_digits: calc: operand digits; guess_number: the number is below 10**max_digits.

    Returns:
        (train_path, val_path).
    """
    makers: dict[str, Callable[[int], list[dict[str, Any]]]] = {
        CALC_SOURCE: lambda n: make_calc_rows(n, seed, min_digits, max_digits),
        GUESS_SOURCE: lambda n: make_guess_rows(n, seed, high=10**max_digits - 1),
    }
    if task not in makers:
        raise ValueError(f"unknown agent task {task!r}; choose one of {sorted(makers)}")
    out = Path(out_dir)
    train_path, val_path, meta_path = out / "train.parquet", out / "val.parquet", out / _META_NAME
    meta = dict(task=task, version=_FORMAT_VERSION, num_train=num_train, num_val=num_val, seed=seed)
    meta.update(min_digits=min_digits, max_digits=max_digits)
    if train_path.is_file() and val_path.is_file() and meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()) == meta:
                return str(train_path), str(val_path)
        except json.JSONDecodeError:
            pass  # a damaged sidecar: regenerate
    rows = makers[task](num_train + num_val)
    val_rows, train_rows = rows[:num_val], rows[num_val:]
    for split, split_rows in (("val", val_rows), ("train", train_rows)):
        for i, row in enumerate(split_rows):
            row["extra_info"].update(index=i, split=split)
    meta_path.unlink(missing_ok=True)  # the sidecar is written last: files without it are never reused
    write_rows(train_rows, train_path)
    write_rows(val_rows, val_path)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    logger.info("%s: wrote %d train rows to %s and %d val rows to %s", task, num_train, train_path, num_val, val_path)
    return str(train_path), str(val_path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a built-in agent task as verl parquet files.")
    parser.add_argument("task", choices=[CALC_SOURCE, GUESS_SOURCE])
    parser.add_argument("--out", required=True, help="output folder for train.parquet and val.parquet")
    parser.add_argument("--num-train", type=int, default=2000, help="training prompts")
    parser.add_argument("--num-val", type=int, default=200, help="validation prompts (disjoint from training)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--min-digits", type=int, default=3, help="calc: fewest digits per operand")
    parser.add_argument("--max-digits", type=int, default=3, help="calc: most digits; guess_number: number < 10**this")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ensure_task_dataset(args.task, args.out, args.num_train, args.num_val, args.seed, args.min_digits, args.max_digits)


if __name__ == "__main__":
    main()
