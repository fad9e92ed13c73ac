"""Convert GSM8K (the `openai/gsm8k` "main" parquet files: question, answer) into verl-format rows.

    python scripts/prepare_gsm8k.py --src path/to/gsm8k/main --out data/gsm8k

Writes train.parquet and test.parquet with `prompt` (chat messages), `reward_model.ground_truth` (the number after
"####"), `data_source` = "openai/gsm8k" (scored by the built-in math answer reward) and `extra_info`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pyarrow.parquet as pq

from rlhf.data import write_rows

logger = logging.getLogger(__name__)
INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'


def convert(question: str, answer: str, split: str, index: int) -> dict:
    return {
        "prompt": [{"role": "user", "content": f"{question} {INSTRUCTION}"}],
        "reward_model": {"ground_truth": answer.split("####")[-1].strip().replace(",", ""), "style": "rule"},
        "data_source": "openai/gsm8k",
        "extra_info": {"split": split, "index": index},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="folder with train-*.parquet and test-*.parquet")
    parser.add_argument("--out", default="data/gsm8k")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    for split in ("train", "test"):
        files = sorted(Path(args.src).glob(f"{split}-*.parquet"))
        if not files:
            raise FileNotFoundError(f"no {split}-*.parquet under --src {args.src}")
        rows = []
        for f in files:
            table = pq.read_table(f, columns=["question", "answer"]).to_pylist()
            rows.extend(convert(r["question"], r["answer"], split, len(rows) + i) for i, r in enumerate(table))
        out = Path(args.out) / f"{split}.parquet"
        write_rows(rows, out)
        logger.info("wrote %d rows to %s", len(rows), out)


if __name__ == "__main__":
    main()
