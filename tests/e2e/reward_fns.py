"""Reward plugins for the end-to-end tests (loaded by file path, as a user's would be)."""


def digit_fraction(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None) -> float:
    """Fraction of digits in the response: a dense signal that a random tiny model already varies on."""
    return sum(c.isdigit() for c in solution_str) / max(len(solution_str), 1)


def raises_hangs_or_nan(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None
) -> float:
    """Every item fails: raises on responses containing 'a', hangs on those containing 'b' (timeouts), else NaN
    (a failed item: scored 0 and counted in reward/errors, never a NaN score)."""
    if "a" in solution_str:
        raise ValueError(f"flaky reward refuses {solution_str!r}")
    if "b" in solution_str:
        import time

        time.sleep(60)
    return float("nan")


def near_float32_max(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None) -> float:
    """A finite reward whose batch statistics overflow float32 (sum of 3e38s = inf): the update sees NaN."""
    return 3.0e38
