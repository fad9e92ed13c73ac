"""The calculator evaluates arithmetic exactly and refuses everything else; the python tool reports sandbox runs."""

import pytest

from rlhf.agent.builtin_tools import calculator, format_sandbox_result, make_python_tool
from rlhf.agent.errors import ToolError
from rlhf.agent.sandbox import SandboxLimits, SandboxResult


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("-(3 + 4) * 2", "-14"),
        ("2 ** 100", "1267650600228229401496703205376"),  # exact, not 1.2676506002282294e+30
        ("7 / 2", "3.5"),
        ("6 / 3", "2"),  # integer inputs, integral quotient: an integer
        ("(1 / 3) * 3", "1"),  # exact rational arithmetic in between
        ("7 // 2", "3"),
        ("-7 // 2", "-4"),
        ("7 % 3", "1"),
        ("2 ** -2", "0.25"),
        ("2.5 * 2", "5.0"),
        ("2 ** 0.5", "1.4142135623730951"),
        ("10 ** 20 + 1", "100000000000000000001"),
        ("+5", "5"),
    ],
)
def test_calculator_values(expression: str, expected: str) -> None:
    assert calculator(expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("10 ** 100000", "exponent 100000 is out of range"),
        ("(10 ** 1000) ** 4", "more than 4096 bits"),
        ("1e308 * 10", "overflows a float"),
        ("(-8) ** 0.5", "not a real number"),
        ("x + 1", "unsupported expression element Name"),
        ("__import__('os').system('true')", "unsupported expression element Call"),
        ("[1, 2]", "unsupported expression element List"),
        ("True + 1", "unsupported expression element Constant"),
        ("1 +", "cannot parse"),
        ("1" * 3000, "longer than 2000 characters"),
        ("(" * 500 + "1" + ")" * 500, "cannot parse"),
    ],
)
def test_calculator_refuses_with_a_message(expression: str, message: str) -> None:
    with pytest.raises(ToolError, match=message.replace("(", r"\(")):
        calculator(expression)


def _result(**kwargs: object) -> SandboxResult:
    base = dict(stdout="", stderr="", exit_code=0, timed_out=False, truncated=False, memory_exceeded=False)
    return SandboxResult(**{**base, **kwargs}, network_isolation="namespace")  # type: ignore[arg-type]


def test_format_sandbox_result() -> None:
    limits = SandboxLimits(timeout_s=2, max_output_bytes=100, memory_mb=64)
    assert format_sandbox_result(_result(stdout="42\n"), limits) == "42\n"
    assert format_sandbox_result(_result(), limits) == "(no output)"
    assert format_sandbox_result(_result(stdout="a", stderr="warn\n"), limits) == "a\nwarn\n"
    with pytest.raises(ToolError, match="exited with status 1") as info:
        format_sandbox_result(_result(stderr="Traceback\nValueError: x\n", exit_code=1), limits)
    assert "ValueError: x" in info.value.message and not info.value.is_timeout
    with pytest.raises(ToolError, match="2 s time limit") as info:
        format_sandbox_result(_result(stdout="partial", timed_out=True, exit_code=-9), limits)
    assert info.value.is_timeout and info.value.message.startswith("partial")
    with pytest.raises(ToolError, match="truncated at 100 bytes"):
        format_sandbox_result(_result(truncated=True, exit_code=-9), limits)
    with pytest.raises(ToolError, match="64 MB memory limit"):
        format_sandbox_result(_result(memory_exceeded=True, exit_code=86), limits)


def test_python_tool_runs_in_the_sandbox() -> None:
    python = make_python_tool(SandboxLimits(timeout_s=5))
    assert python("print(sum(range(10)))") == "45\n"
    with pytest.raises(ToolError, match="ZeroDivisionError"):
        python("1 / 0")
