"""The built-in arithmetic task ("12+34=" -> "46") used by the tiny recipe: row generation and a cached dataset.

Write the dataset from the command line:
    python -m rlhf.data.arith --out data/arith --num-train 4096 --num-val 256
"""

import argparse
import json
import logging
import random
from pathlib import Path
from typing import Any

from rlhf.data.rows import write_rows

logger = logging.getLogger(__name__)

DATA_SOURCE = "arith"
SUPPORTED_OPS = ("+", "-", "*")
# Bump when the generated rows change for the same parameters, so cached datasets are rebuilt.
_FORMAT_VERSION = 1
_META_NAME = "arith_meta.json"


def _check_params(num_rows: int, min_digits: int, max_digits: int, ops: tuple[str, ...]) -> None:
    if num_rows < 0:
        raise ValueError(f"arith: num_rows={num_rows} must be >= 0")
    if not 1 <= min_digits <= max_digits:
        raise ValueError(
            f"arith: need 1 <= min_digits <= max_digits, got min_digits={min_digits}, max_digits={max_digits}"
        )
    if not ops or any(op not in SUPPORTED_OPS for op in ops):
        raise ValueError(f"arith: ops={ops!r} must be a non-empty subset of {SUPPORTED_OPS}")


def _operand_range(min_digits: int, max_digits: int) -> tuple[int, int]:
    """Smallest and largest operand (inclusive); one-digit numbers include 0."""
    return (0 if min_digits == 1 else 10 ** (min_digits - 1)), 10**max_digits - 1


def _num_problems(min_digits: int, max_digits: int, ops: tuple[str, ...]) -> int:
    lo, hi = _operand_range(min_digits, max_digits)
    n = hi - lo + 1
    # "-" orders its operands (non-negative results), so a-b and b-a are one problem.
    return sum(n * (n + 1) // 2 if op == "-" else n * n for op in set(ops))


def _problem(a: int, op: str, b: int) -> tuple[int, str, int]:
    return (max(a, b), op, min(a, b)) if op == "-" else (a, op, b)


def _sample_problems(
    rng: random.Random, num_rows: int, min_digits: int, max_digits: int, ops: tuple[str, ...]
) -> list[tuple[int, str, int]]:
    lo, hi = _operand_range(min_digits, max_digits)
    ops = tuple(dict.fromkeys(ops))  # dedupe, keep order: determinism must not depend on set order
    if 2 * num_rows > _num_problems(min_digits, max_digits, ops):
        # Dense request: rejection sampling would stall near the end, so enumerate and sample.
        every = sorted({_problem(a, op, b) for op in ops for a in range(lo, hi + 1) for b in range(lo, hi + 1)})
        return rng.sample(every, num_rows)

    def draw_operand() -> int:
        # The digit count first, then the number: otherwise almost every operand would have max_digits digits.
        digits = rng.randint(min_digits, max_digits)
        return rng.randint(*_operand_range(digits, digits))

    seen: set[tuple[int, str, int]] = set()
    problems = []
    while len(problems) < num_rows:
        a = draw_operand()
        b = draw_operand()
        problem = _problem(a, rng.choice(ops), b)
        if problem not in seen:
            seen.add(problem)
            problems.append(problem)
    return problems


def _answer(a: int, op: str, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def make_arith_rows(
    num_rows: int,
    seed: int,
    min_digits: int = 1,
    max_digits: int = 2,
    ops: tuple[str, ...] = ("+",),
) -> list[dict[str, Any]]:
    """Distinct arithmetic problems as verl rows, the same for the same arguments.

    Args:
        num_rows: how many problems (all distinct).
        seed: seeds the generator.
        min_digits, max_digits: operand sizes; the digit count of each operand is drawn uniformly from this range.
        ops: operators drawn from ("+", "-", "*"); for "-" the larger operand comes first, so results are >= 0.

    Returns:
        Rows like `{"prompt": [{"role": "user", "content": "12+34="}], "reward_model": {"ground_truth": "46",
        "style": "rule"}, "data_source": "arith", "extra_info": {"index": 0}}`.

    Raises:
        ValueError: bad digits or ops, or more rows than there are distinct problems.
    """
    ops = tuple(ops)
    _check_params(num_rows, min_digits, max_digits, ops)
    num_problems = _num_problems(min_digits, max_digits, ops)
    if num_rows > num_problems:
        raise ValueError(
            f"arith: {num_rows} rows requested but only {num_problems} distinct problems exist with "
            f"min_digits={min_digits}, max_digits={max_digits}, ops={ops}; raise max_digits or add ops"
        )
    problems = _sample_problems(random.Random(seed), num_rows, min_digits, max_digits, ops)
    return [
        {
            "prompt": [{"role": "user", "content": f"{a}{op}{b}="}],
            "reward_model": {"ground_truth": str(_answer(a, op, b)), "style": "rule"},
            "data_source": DATA_SOURCE,
            "extra_info": {"index": i},
        }
        for i, (a, op, b) in enumerate(problems)
    ]


def ensure_arith_dataset(
    out_dir: str | Path,
    num_train: int,
    num_val: int,
    seed: int,
    *,
    min_digits: int = 1,
    max_digits: int = 2,
    ops: tuple[str, ...] = ("+",),
) -> tuple[str, str]:
    """Write `train.parquet` and `val.parquet` under out_dir unless they exist with the same parameters.

    The parameters are kept in a json sidecar (`arith_meta.json`); any change regenerates both files. Train and
    validation prompts never overlap (one pool of distinct problems is split).

    Returns:
        (train_path, val_path).

    Raises:
        ValueError: as make_arith_rows.
    """
    out_dir = Path(out_dir)
    train_path, val_path, meta_path = out_dir / "train.parquet", out_dir / "val.parquet", out_dir / _META_NAME
    meta = {
        "version": _FORMAT_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "seed": seed,
        "min_digits": min_digits,
        "max_digits": max_digits,
        "ops": list(ops),
    }
    if train_path.is_file() and val_path.is_file() and meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()) == meta:
                return str(train_path), str(val_path)
        except json.JSONDecodeError:
            pass  # a damaged sidecar: regenerate
    rows = make_arith_rows(num_train + num_val, seed, min_digits, max_digits, tuple(ops))
    val_rows, train_rows = rows[:num_val], rows[num_val:]
    for split, split_rows in (("val", val_rows), ("train", train_rows)):
        for i, row in enumerate(split_rows):
            row["extra_info"] = {"index": i, "split": split}
    meta_path.unlink(missing_ok=True)  # the sidecar is written last: files without it are never reused
    write_rows(train_rows, train_path)
    write_rows(val_rows, val_path)
    tmp_meta = meta_path.with_name(f".{meta_path.name}.tmp")
    tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
    tmp_meta.replace(meta_path)
    logger.info("arith: wrote %d train rows to %s and %d val rows to %s", num_train, train_path, num_val, val_path)
    return str(train_path), str(val_path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the arithmetic task as verl parquet files.")
    parser.add_argument("--out", required=True, help="output folder for train.parquet and val.parquet")
    parser.add_argument("--num-train", type=int, default=4096, help="training prompts")
    parser.add_argument("--num-val", type=int, default=256, help="validation prompts (disjoint from training)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--min-digits", type=int, default=1, help="fewest digits per operand")
    parser.add_argument("--max-digits", type=int, default=2, help="most digits per operand")
    parser.add_argument("--ops", default="+", help="operators, as one string, e.g. '+-*'")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ensure_arith_dataset(
        args.out,
        args.num_train,
        args.num_val,
        args.seed,
        min_digits=args.min_digits,
        max_digits=args.max_digits,
        ops=tuple(args.ops),
    )


if __name__ == "__main__":
    main()
