"""rlhf.rewards.math_answer: answer extraction and the rule-based scores."""

import pytest

from rlhf.rewards import arith_score, exact_match_score, extract_answer, format_score, math_answer_score


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so the answer is \boxed{42}.", "42"),
        (r"\boxed{1} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{x^{2}+1}", "x^{2}+1"),
        ("She sold 48 clips.\n#### 72", "72"),
        ("#### $1,234.", "1234"),
        ("#### 7 apples", "7"),
        ("12 apples and 30 pears: 42 fruit", "42"),
        ("the result is -3.5.", "-3.5"),
        ("1,234,567 total", "1234567"),
        ("12+34=46", "46"),
        ("no numbers here", None),
        ("", None),
        (r"unclosed \boxed{42", "42"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_exact_match():
    assert exact_match_score("x", " 46\n", "46") == 1.0
    assert exact_match_score("x", "46.0", "46") == 0.0


@pytest.mark.parametrize(
    ("solution", "ground_truth", "expected"),
    [
        ("... #### 72", "72", 1.0),
        ("the answer is 72.0", "72", 1.0),
        ("#### 1,000", "1000", 1.0),
        ("0.5", "1/2", 1.0),
        (r"\boxed{\frac{1}{2}}", "0.5", 1.0),
        ("0.30000000000000004", "0.3", 1.0),
        ("#### 71", "72", 0.0),
        ("no answer", "72", 0.0),
        ("#### 72", "Natalia sold 48/2 = 24 clips.\n#### 72", 1.0),  # full GSM8K solution as ground truth
        (r"\boxed{x+1}", "x + 1", 1.0),
        # equivalent forms that math-verify recognises (a plain numeric / text comparison scored them 0.0)
        (r"so \boxed{\sqrt2}", r"\sqrt{2}", 1.0),
        (r"\boxed{x=3}", "3", 1.0),
        (r"\boxed{\dfrac12}", "1/2", 1.0),
        (r"\boxed{50\%}", "50", 1.0),
        (r"the answer is \boxed{\text{(B)}}", "B", 1.0),
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}", 1.0),
        # ... and still tell different answers apart
        (r"\boxed{\sqrt3}", r"\sqrt{2}", 0.0),
        (r"\boxed{x=4}", "3", 0.0),
        (r"\boxed{\text{(C)}}", "B", 0.0),
        (r"\boxed{25\%}", "50", 0.0),
        # the numeric rule still decides where math-verify reads the answer differently (e as Euler's number)
        (r"\boxed{1e3}", "1000", 1.0),
        # math-verify cannot parse it: no error, no match
        (r"\boxed{\frac{1}{}}", "1", 0.0),
    ],
)
def test_math_answer_score(solution, ground_truth, expected):
    assert math_answer_score("openai/gsm8k", solution, ground_truth) == expected


def test_format_score():
    assert format_score("gsm8k", "#### 72", "72") == {"score": 1.0, "acc": 1.0, "format": 1.0}
    assert format_score("gsm8k", "#### 7", "72") == {"score": 0.1, "acc": 0.0, "format": 1.0}
    assert format_score("gsm8k", "72", "72") == {"score": 0.0, "acc": 1.0, "format": 0.0}


@pytest.mark.parametrize(
    ("response", "expected"), [("46", 1.0), (" 46\n", 1.0), ("46 12+3=15", 0.0), ("4", 0.0), ("", 0.0)]
)
def test_arith_score(response, expected):
    assert arith_score("arith", response, "46") == expected
