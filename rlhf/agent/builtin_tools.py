"""Built-in tools: a safe arithmetic calculator and a sandboxed Python interpreter.

Tools are plain functions with type hints and a Google-style docstring (the docstring is the description the model
reads). They report failures by raising; ToolError hands its message to the model verbatim.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from fractions import Fraction

from rlhf.agent.errors import ToolError
from rlhf.agent.sandbox import SandboxLimits, SandboxResult, run_python

_MAX_EXPRESSION_CHARS = 2000
_MAX_EXPONENT = 4096
# Exact results past this many bits (~1,200 digits) are refused: big-integer arithmetic must stay cheap.
_MAX_RESULT_BITS = 4096

Number = int | Fraction | float
_BINARY_OPS: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


def _check_size(value: Number) -> Number:
    if isinstance(value, Fraction):
        if max(value.numerator.bit_length(), value.denominator.bit_length()) > _MAX_RESULT_BITS:
            raise ToolError(f"Error: the result has more than {_MAX_RESULT_BITS} bits; use smaller numbers")
        return int(value) if value.denominator == 1 else value
    if isinstance(value, int) and value.bit_length() > _MAX_RESULT_BITS:
        raise ToolError(f"Error: the result has more than {_MAX_RESULT_BITS} bits; use smaller numbers")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("Error: the result overflows a float")
    return value


def _power(base: Number, exponent: Number) -> Number:
    is_exact_integer = isinstance(exponent, int) or (isinstance(exponent, Fraction) and exponent.denominator == 1)
    if is_exact_integer and not isinstance(base, float):
        exponent = int(exponent)
        if abs(exponent) > _MAX_EXPONENT:
            raise ToolError(f"Error: exponent {exponent} is out of range (|exponent| <= {_MAX_EXPONENT})")
        size = max(Fraction(base).numerator.bit_length(), Fraction(base).denominator.bit_length())
        if size * abs(exponent) > _MAX_RESULT_BITS * 2:  # cheap upper bound, checked before computing
            raise ToolError(f"Error: the result has more than {_MAX_RESULT_BITS} bits; use smaller numbers")
        if base == 0 and exponent < 0:
            raise ToolError("Error: division by zero")
        return Fraction(base) ** exponent
    try:
        result = float(base) ** float(exponent)
    except OverflowError as e:
        raise ToolError("Error: the result overflows a float") from e
    except ZeroDivisionError as e:
        raise ToolError("Error: division by zero") from e
    if isinstance(result, complex):
        raise ToolError("Error: the result is not a real number")
    return result


def _evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):  # type(): bool is an int subclass
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            return _check_size(_power(left, right))
        if isinstance(node.op, ast.Div):
            if right == 0:
                raise ToolError("Error: division by zero")
            is_exact = not isinstance(left, float) and not isinstance(right, float)
            return _check_size(Fraction(left) / Fraction(right) if is_exact else left / right)
        op = _BINARY_OPS.get(type(node.op))
        if op is not None:
            if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and right == 0:
                raise ToolError("Error: division by zero")
            return _check_size(op(left, right))
    raise ToolError(
        f"Error: unsupported expression element {type(node).__name__}; use numbers, + - * / // % ** and parentheses"
    )


def _format_number(value: Number) -> str:
    if isinstance(value, Fraction):
        return repr(float(value))  # not an integer (those became int in _check_size)
    return str(value) if isinstance(value, int) else repr(value)


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression and return its value.

    Supports numbers, parentheses, unary minus and the operators + - * / // % and ** (for example "(2 + 3) * 4"
    or "2 ** 10 / 3"). Integer arithmetic is exact.

    Args:
        expression: the arithmetic expression to evaluate.
    """
    if len(expression) > _MAX_EXPRESSION_CHARS:
        raise ToolError(f"Error: the expression is longer than {_MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise ToolError(f"Error: cannot parse {expression!r} as an arithmetic expression") from e
    try:
        return _format_number(_check_size(_evaluate(tree)))
    except RecursionError as e:
        raise ToolError("Error: the expression is nested too deeply") from e


def format_sandbox_result(result: SandboxResult, limits: SandboxLimits) -> str:
    """The model's view of a sandboxed run: stdout, then stderr; failures raise ToolError with that text.

    Raises:
        ToolError: the program timed out (is_timeout=True), printed past the output limit, ran out of memory or
            exited with a non-zero status.
    """
    text = result.stdout
    if result.stderr:
        text += ("\n" if text and not text.endswith("\n") else "") + result.stderr
    if result.timed_out:
        raise ToolError(f"{text}\nError: the program ran past the {limits.timeout_s:g} s time limit", is_timeout=True)
    if result.truncated:
        raise ToolError(f"{text}\nError: output truncated at {limits.max_output_bytes} bytes; the program was stopped")
    if result.memory_exceeded:
        raise ToolError(f"{text}\nError: the program ran past the {limits.memory_mb} MB memory limit")
    if result.exit_code != 0:
        raise ToolError(f"{text}\nError: the program exited with status {result.exit_code}")
    return text if text else "(no output)"


def make_python_tool(limits: SandboxLimits) -> Callable[[str], str]:
    """A `python(code)` tool running each program in the sandbox under `limits`."""

    def python(code: str) -> str:
        """Run a Python program in a sandbox (no network, a temporary directory) and return what it printed.

        Print the values you want to see; the program's stdout and stderr are returned.

        Args:
            code: the Python program to run.
        """
        return format_sandbox_result(run_python(code, limits), limits)

    return python


python = make_python_tool(SandboxLimits())
