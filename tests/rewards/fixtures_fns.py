"""Module-level reward functions for the runner tests; workers load them by file spec (this file's path)."""

import os
import time
from pathlib import Path

SPEC_PREFIX = f"{Path(__file__).resolve()}:"


def first_char_score(data_source, solution_str, ground_truth, extra_info=None):
    """1.0 if the response starts with the ground truth; behaves badly on request via the solution text."""
    if solution_str == "raise":
        raise ZeroDivisionError("bad sample")
    if solution_str == "hang":
        time.sleep(60)
    if solution_str == "slow":
        time.sleep(0.15)
        return 1.0
    if solution_str == "exit":
        os._exit(3)
    if solution_str == "none":
        return None
    return 1.0 if solution_str.startswith(ground_truth) else 0.0


def dict_score(data_source, solution_str, ground_truth, extra_info=None):
    """A dict return: "score" plus numeric extras (and a non-numeric one that is ignored)."""
    out = {"score": float(solution_str == ground_truth), "length": len(solution_str), "note": "text"}
    if extra_info and extra_info.get("bonus"):
        out["bonus"] = 1
    return out


def pid_score(data_source, solution_str, ground_truth, extra_info=None):
    """The worker's pid, to see which processes scored."""
    return float(os.getpid())


NOT_CALLABLE = 3
