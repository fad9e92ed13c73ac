"""Reward plugins for the end-to-end tests (loaded by file path, as a user's would be)."""


def digit_fraction(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None) -> float:
    """Fraction of digits in the response: a dense signal that a random tiny model already varies on."""
    return sum(c.isdigit() for c in solution_str) / max(len(solution_str), 1)
