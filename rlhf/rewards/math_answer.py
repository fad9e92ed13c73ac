r"""Rule-based reward functions: answer extraction, exact match, numeric math answers, format, the arith task.

All follow verl's signature `fn(data_source, solution_str, ground_truth, extra_info=None) -> float | dict`;
a dict holds "score" plus extra numeric metrics. Math answers are compared with math-verify (symbolic equivalence:
"\sqrt2" = "\sqrt{2}", "x=3" = "3", "50\%" = "50") besides a plain numeric / text rule.
"""

import math
import re
from fractions import Fraction
from typing import Any

import math_verify

# A number in text: optional sign, digits with optional thousands separators, optional decimals
# ("-1,234.5", "42", ".5"). "12,3456" is two numbers, "12" and "3456"; "1,2" is "1" and "2".
_NUMBER_FIND = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|-?\.\d+")
_NUMBER_WITH_COMMAS = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_LATEX_FRAC = re.compile(r"\\d?frac\{(-?\d+)\}\{(-?\d+)\}")
_BOXED = "\\boxed{"
_GSM8K_MARKER = "####"
# Numeric answers within this tolerance (absolute and relative) count as equal: absorbs 0.1+0.2-style float noise.
MATH_TOLERANCE = 1e-6


def _last_boxed(text: str) -> str | None:
    r"""Content of the last \boxed{...}, matching nested braces; None if there is none or it is unclosed."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth, i = 1, start + len(_BOXED)
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def _normalize(answer: str) -> str:
    answer = answer.strip().strip("$").strip().rstrip(".").strip()
    if _NUMBER_WITH_COMMAS.fullmatch(answer):
        answer = answer.replace(",", "")
    return answer


def extract_answer(text: str) -> str | None:
    r"""The final answer in a response: the last \boxed{...}, else the text after the last "####", else the last number.

    Commas in numbers are removed ("1,234" -> "1234"); surrounding "$" and a trailing "." are stripped.

    Returns:
        The answer string, or None when the text holds none of the three.
    """
    boxed = _last_boxed(text)
    if boxed is not None:
        return _normalize(boxed)
    if _GSM8K_MARKER in text:
        after = text.rsplit(_GSM8K_MARKER, 1)[1].strip()
        first_line = after.splitlines()[0] if after else ""
        if first_line:
            number = _NUMBER_FIND.search(first_line)
            return _normalize(number.group() if number else first_line)
    numbers = _NUMBER_FIND.findall(text)
    return _normalize(numbers[-1]) if numbers else None


def _to_number(answer: str) -> float | None:
    r"""The answer as a number ("12", "-3.5", "1/4", "\frac{1}{4}"), or None."""
    answer = _LATEX_FRAC.sub(r"\1/\2", answer.replace(" ", ""))
    try:
        return float(Fraction(answer))
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(answer: str, reference: str) -> bool:
    """Numeric equality within MATH_TOLERANCE when both parse as numbers, else string equality (spaces ignored)."""
    a, b = _to_number(answer), _to_number(reference)
    if a is not None and b is not None:
        return math.isclose(a, b, rel_tol=MATH_TOLERANCE, abs_tol=MATH_TOLERANCE)
    return answer.replace(" ", "") == reference.replace(" ", "")


def _math_parse(answer: str) -> list[Any] | None:
    # Timeouts off: math-verify's own use signal.alarm, which fails outside the main thread (a Ray actor's or an
    # inline runner's caller); RewardRunner's worker processes enforce reward.timeout_s per item instead.
    parsed = math_verify.parse(f"${answer}$", parsing_timeout=None)
    is_expression = any(not isinstance(value, str) for value in parsed)  # [] or [text]: no math expression found
    return parsed if is_expression else None


def answers_equivalent(answer: str, reference: str) -> bool:
    r"""Whether two extracted answers mean the same: math-verify's symbolic check, then answers_match.

    math-verify reads both as LaTeX math and compares them symbolically, so "\sqrt2" = "\sqrt{2}", "x=3" = "3",
    "\dfrac12" = "1/2", "50\%" = "50" and "	ext{(B)}" = "B". answers_match (numbers within MATH_TOLERANCE, or equal
    text) decides when math-verify cannot parse a side or reads it differently ("1e3" is 1000 there, 1*e*3 to it).
    """
    if answers_match(answer, reference):  # cheap, and the common case for GSM8K-style numbers
        return True
    gold, pred = _math_parse(reference), _math_parse(answer)
    if gold is None or pred is None:
        return False
    return bool(math_verify.verify(gold, pred, timeout_seconds=None))


def exact_match_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict[str, Any] | None = None
) -> float:
    """1.0 if the response equals the ground truth after stripping surrounding whitespace, else 0.0."""
    return 1.0 if solution_str.strip() == str(ground_truth).strip() else 0.0


def math_answer_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict[str, Any] | None = None
) -> float:
    r"""1.0 if the extracted answer is equivalent to the ground truth (answers_equivalent), else 0.0.

    The answer is the response's last oxed{...}, else what follows "####", else its last number. The ground truth
    may be a bare answer ("72", "rac{1}{2}") or a full solution ending in "#### 72" or holding a oxed{...}.
    """
    answer = extract_answer(solution_str)
    if answer is None:
        return 0.0
    ground_truth = str(ground_truth)
    is_marked = _GSM8K_MARKER in ground_truth or _BOXED in ground_truth
    reference = (extract_answer(ground_truth) if is_marked else None) or _normalize(ground_truth)
    return 1.0 if answers_equivalent(answer, reference) else 0.0


# Score for a well-formatted but wrong answer in format_score (verl's gsm8k reward calls this "format_score").
FORMAT_BONUS = 0.1


def format_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict[str, Any] | None = None
) -> dict[str, float]:
    r"""Example of a dict-returning reward: correctness, with partial credit for a marked answer.

    Returns:
        {"score": 1.0 if correct and marked (\boxed{} or "####"), FORMAT_BONUS if marked but wrong, else 0.0,
         "acc": math_answer_score, "format": 1.0 if the answer is marked}. "acc" and "format" become metrics.
    """
    acc = math_answer_score(data_source, solution_str, ground_truth, extra_info)
    is_marked = _last_boxed(solution_str) is not None or _GSM8K_MARKER in solution_str
    score = (1.0 if acc else FORMAT_BONUS) if is_marked else 0.0
    return {"score": score, "acc": acc, "format": float(is_marked)}


def arith_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict[str, Any] | None = None
) -> float:
    """The arith task: 1.0 if the response (text after the prompt) is exactly the answer, else 0.0.

    Surrounding whitespace is ignored, anything else is not: "46" scores 1.0, "46 7+1=8" scores 0.0, which
    rewards the policy for stopping (emitting EOS) after the answer.
    """
    return exact_match_score(data_source, solution_str, ground_truth, extra_info)
