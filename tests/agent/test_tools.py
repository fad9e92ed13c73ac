"""Tool schemas come from type hints and docstrings; bad tools fail at start-up naming the config key."""

from pathlib import Path

import pytest

from rlhf.agent.tools import ToolRegistry, load_tools, tool_from_function

FNS = str(Path(__file__).with_name("tool_fns.py"))


def test_schema_from_hints_and_docstring() -> None:
    registry = load_tools([f"{FNS}:add", f"{FNS}:describe"])
    add, describe = registry.schemas()
    assert add == {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {
                "type": "object",
                "properties": {
                    "a": {"type": "integer", "description": "the first addend."},
                    "b": {"type": "integer", "description": "the second addend."},
                },
                "required": ["a", "b"],
            },
        },
    }
    properties = describe["function"]["parameters"]["properties"]
    assert properties["kind"] == {"type": "string", "enum": ["cat", "dog"], "description": "which animal."}
    assert properties["count"]["type"] == "integer" and properties["count"]["nullable"] is True
    assert properties["tags"]["items"] == {"type": "string"}
    assert describe["function"]["parameters"]["required"] == ["kind"]


def test_keyword_only_parameters_are_hidden_from_the_model() -> None:
    tool = load_tools([f"{FNS}:check_answer"]).get("check_answer")
    assert tool is not None and tool.hidden_params == ("ground_truth",)
    assert list(tool.parameters["properties"]) == ["answer"]
    assert tool.check_arguments({"answer": "4"}, {"ground_truth": "4"}) is None
    assert "unexpected argument 'ground_truth'" in tool.check_arguments({"answer": "4", "ground_truth": "4"}, {})


def test_argument_checks_against_schema_and_signature() -> None:
    registry = load_tools([f"{FNS}:add", f"{FNS}:describe"])
    add, describe = registry.get("add"), registry.get("describe")
    assert add.check_arguments({"a": 1, "b": 2}, {}) is None
    assert "'1' is not of type 'integer'" in add.check_arguments({"a": "1", "b": 2}, {})
    assert "'b' is a required property" in add.check_arguments({"a": 1}, {})
    assert "unexpected keyword argument 'c'" in add.check_arguments({"a": 1, "b": 2, "c": 3}, {})
    assert describe.check_arguments({"kind": "cat", "count": None}, {}) is None  # Optional accepts null
    assert "'cow' is not one of ['cat', 'dog']" in describe.check_arguments({"kind": "cow"}, {})


def test_builtins_and_spec_paths_load_in_order() -> None:
    registry = load_tools(["calculator", "python", f"{FNS}:add"])
    assert registry.names == ["calculator", "python", "add"]
    assert registry.get("python").is_isolated and registry.get("python").spec is None
    assert registry.get("calculator").spec == "rlhf.agent.builtin_tools:calculator"
    assert registry.get("add").spec == f"{FNS}:add"
    assert [s["function"]["name"] for s in registry.schemas(["add", "nope", "calculator"])] == ["add", "calculator"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("/no/such/file.py:fn", r"agent.tools\[1\]='/no/such/file.py:fn': file /no/such/file.py does not exist"),
        (f"{FNS}:no_docstring", r"agent.tools\[1\]: tool 'no_docstring' needs type hints .* no docstring"),
        (f"{FNS}:no_hint", r"agent.tools\[1\]: tool 'no_hint' needs type hints .* missing a type hint"),
        (f"{FNS}:missing", r"agent.tools\[1\]=.* has no attribute 'missing'"),
        ("not_a_spec", r"agent.tools\[1\]='not_a_spec' must look like 'package.module:function'"),
    ],
)
def test_bad_tools_fail_at_start_up_naming_the_key(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_tools(["calculator", spec])


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="agent.tools: two tools are named 'add'"):
        load_tools([f"{FNS}:add", f"{FNS}:add"])


def test_a_nested_function_cannot_run_in_a_worker() -> None:
    def local(x: int) -> int:
        """A local function.

        Args:
            x: a number.
        """
        return x

    with pytest.raises(ValueError, match="my.key: tool 'local' cannot be loaded by a worker process"):
        tool_from_function(local, "my.key")
    assert tool_from_function(local, "my.key", is_isolated=True).name == "local"
    assert len(ToolRegistry([tool_from_function(local, "k", is_isolated=True)])) == 1
