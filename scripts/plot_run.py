"""Redraw a run's curves and print its summary.

.venv/bin/python scripts/plot_run.py outputs/rlhf/grpo_arith_tiny            # -> .../curves.png
.venv/bin/python scripts/plot_run.py RUN_DIR --out curves.png
"""

from __future__ import annotations

import argparse
import logging

from rlhf.plotting import plot_run, summarize_run

logger = logging.getLogger("plot_run")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run directory holding metrics.jsonl (<output_dir>/<project>/<experiment>)")
    parser.add_argument("--out", default=None, help="PNG to write (default: <run_dir>/curves.png)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info("wrote %s", plot_run(args.run_dir, args.out))
    logger.info("%s", summarize_run(args.run_dir))


if __name__ == "__main__":
    main()
