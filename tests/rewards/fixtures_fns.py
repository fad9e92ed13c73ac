"""Module-level reward functions for the runner tests; workers load them by file spec (this file's path)."""

import math
import os
import time
from pathlib import Path

import numpy as np

SPEC_PREFIX = f"{Path(__file__).resolve()}:"


def first_char_score(data_source, solution_str, ground_truth, extra_info=None):
    """1.0 if the response starts with the ground truth; behaves badly on request via the solution text."""
    if solution_str == "raise":
        raise ZeroDivisionError("bad sample")
    if solution_str == "hang":
        time.sleep(60)
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


def non_finite_score(data_source, solution_str, ground_truth, extra_info=None):
    """NaN / inf as a score or an extra value, on request via the solution text; 1.0 otherwise."""
    values = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "np_nan": np.float32("nan"), "1e39": 1e39}
    if solution_str in values:
        return values[solution_str]
    if solution_str == "nan_extra":
        return {"score": 1.0, "acc": math.nan}
    return {"score": 1.0, "acc": 1.0}


def timed_score(data_source, solution_str, ground_truth, extra_info=None):
    """Sleeps extra_info["sleep_s"], then scores 1.0 with the item's start time.monotonic() and the worker's pid.

    CLOCK_MONOTONIC is one system-wide clock, so the test compares the start times of items across processes.
    """
    started_at = time.monotonic()
    time.sleep(extra_info["sleep_s"])
    return {"score": 1.0, "started_at": started_at, "pid": os.getpid()}


def pid_score(data_source, solution_str, ground_truth, extra_info=None):
    """The worker's pid, to see which processes scored."""
    return float(os.getpid())


NOT_CALLABLE = 3
