"""Build a benchmark workload's inputs (in our .venv): the model folder and the prompt files both frameworks read.

    .venv/bin/python benchmarks/workload.py --workload 25m

Writes, deterministically from fixed seeds (a second run with the same inputs leaves the files alone):
    .bench/models/<model>/       Qwen2 + character tokenizer (rlhf.models.tiny), vocabulary padded per the workload
    .bench/data/train.parquet    verl rows for ours: prompt [{"role": "user", "content": "A+B="}], ground truth A+B
    .bench/data/train.jsonl      the same prompts for TRL's `datasets`: {"prompt": "A+B=", "ground_truth": "..."}
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path

from workloads import DATA_DIR, DATA_SEED, DATA_SOURCE, MAX_OPERAND, NUM_ROWS, WORKLOADS, Workload, get_workload

from rlhf.data import write_rows
from rlhf.models.tiny import TinyModelSpec, build_tiny_model

logger = logging.getLogger("bench.workload")


def make_rows(num_rows: int, seed: int, max_operand: int) -> list[dict]:
    """verl rows "A+B=" with A, B drawn uniformly from [0, max_operand] (repeats allowed, as the issue specifies)."""
    rng = random.Random(seed)
    rows = []
    for i in range(num_rows):
        a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"{a}+{b}="}],
                "reward_model": {"ground_truth": str(a + b), "style": "rule"},
                "data_source": DATA_SOURCE,
                "extra_info": {"index": i},
            }
        )
    return rows


def write_data(out_dir: Path = DATA_DIR, num_rows: int = NUM_ROWS, seed: int = DATA_SEED) -> tuple[Path, Path]:
    """Write train.parquet (ours) and train.jsonl (TRL) unless both exist for the same parameters.

    Returns:
        (parquet path, jsonl path).
    """
    parquet, jsonl, meta = out_dir / "train.parquet", out_dir / "train.jsonl", out_dir / "meta.json"
    want = {"num_rows": num_rows, "seed": seed, "max_operand": MAX_OPERAND, "data_source": DATA_SOURCE}
    if parquet.is_file() and jsonl.is_file() and meta.is_file() and json.loads(meta.read_text()) == want:
        return parquet, jsonl
    rows = make_rows(num_rows, seed, MAX_OPERAND)
    meta.unlink(missing_ok=True)  # written last: files without it are rebuilt
    write_rows(rows, parquet)
    trl_rows = [{"prompt": r["prompt"][0]["content"], "ground_truth": r["reward_model"]["ground_truth"]} for r in rows]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in trl_rows))
    meta.write_text(json.dumps(want))
    logger.info("wrote %d prompts to %s and %s", num_rows, parquet, jsonl)
    return parquet, jsonl


def build_workload(workload: Workload) -> tuple[Path, Path, Path]:
    """The model folder and both data files of `workload` (built if missing).

    Returns:
        (model dir, parquet path, jsonl path).
    """
    model_dir = build_tiny_model(workload.model_dir, TinyModelSpec(**workload.model_spec))
    parquet, jsonl = write_data()
    return model_dir, parquet, jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="25m")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    for path in build_workload(get_workload(args.workload)):
        print(path)


if __name__ == "__main__":
    main()
