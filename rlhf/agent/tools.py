"""Tools the policy may call: a Tool is a Python function plus the JSON schema the model sees.

The schema comes from the function's type hints and Google-style docstring (transformers' `get_json_schema`, the
same reader HF chat templates use), in the OpenAI function format that a chat template's `tools=` argument takes.
Keyword-only parameters (after `*`) are hidden from the model: the environment fills them per sample from the row's
`extra_info.tools_kwargs` (verl's column), e.g. a ground truth a checking tool needs.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from transformers.utils import get_json_schema

from rlhf.agent import builtin_tools
from rlhf.agent.sandbox import SandboxLimits
from rlhf.plugins import callable_spec, load_callable

# name -> (function, is_isolated): the python tool runs its own sandbox subprocess, so it needs no worker process.
BUILTIN_TOOLS: dict[str, tuple[Callable[..., Any], bool]] = {
    "calculator": (builtin_tools.calculator, False),
    "python": (builtin_tools.python, True),
}


@dataclass(frozen=True)
class Tool:
    """One callable tool: its name, the description and argument schema the model reads, and how to call it."""

    name: str
    description: str
    parameters: dict[str, Any]
    """JSON schema (type "object") of the arguments the model passes."""
    fn: Callable[..., Any]
    spec: str | None
    """How a worker process loads fn ("module:function" or "/path/file.py:function"); None for isolated tools."""
    is_isolated: bool = False
    """fn runs its own subprocess with its own limits, so the executor calls it from a thread, not a worker."""
    hidden_params: tuple[str, ...] = ()
    """Keyword-only parameters: filled from the row's tools_kwargs, never shown to or set by the model."""
    _validator: Any = field(default=None, compare=False, repr=False)

    @property
    def schema(self) -> dict[str, Any]:
        """The OpenAI-style function schema, as a HF chat template's `tools=` list takes it."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def check_arguments(self, arguments: dict[str, Any], hidden: dict[str, Any]) -> str | None:
        """Why `fn(**arguments, **hidden)` cannot be called (as a message for the model), or None if it can."""
        messages = [error.message for error in self._validator.iter_errors(arguments)]
        messages += [f"unexpected argument {k!r}" for k in arguments if k in self.hidden_params]
        if messages:
            return f"Error: invalid arguments for tool {self.name!r}: {'; '.join(sorted(messages)[:5])}"
        try:
            inspect.signature(self.fn).bind(**arguments, **hidden)
        except TypeError as e:
            return f"Error: invalid arguments for tool {self.name!r}: {e}"
        return None


def _nullable_to_json_schema(schema: Any) -> Any:
    """transformers marks Optional[...] as {"nullable": true}; JSON schema validation needs type [..., "null"]."""
    if isinstance(schema, dict):
        schema = {k: _nullable_to_json_schema(v) for k, v in schema.items()}
        if schema.pop("nullable", False) and "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            schema["type"] = [*types, "null"]
    elif isinstance(schema, list):
        schema = [_nullable_to_json_schema(v) for v in schema]
    return schema


def _model_view(fn: Callable[..., Any], hidden: tuple[str, ...]) -> Callable[..., Any]:
    """fn as the model sees it: a stand-in without the hidden parameters, for get_json_schema to read."""
    if not hidden:
        return fn
    signature = inspect.signature(fn)

    def view(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a schema view is never called")

    view.__name__, view.__doc__ = fn.__name__, fn.__doc__
    view.__annotations__ = {k: v for k, v in typing.get_type_hints(fn).items() if k not in hidden}
    view.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name not in hidden]
    )
    return view


def tool_from_function(fn: Callable[..., Any], key: str, *, spec: str | None = None, is_isolated: bool = False) -> Tool:
    """Build a Tool from a typed, documented function.

    Args:
        fn: the function; every parameter the model sets needs a type hint (str, int, float, bool, list[...], dict, Literal[...],
            Optional[...]) and an `Args:` line in a Google-style docstring, whose summary becomes the description.
        key: the config key the function came from, named in errors (e.g. "agent.tools[1]").
        spec: how worker processes load fn; derived from fn's module and name when None.
        is_isolated: fn isolates itself (runs its own subprocess with limits): call it from a thread.

    Returns:
        The Tool; keyword-only parameters are hidden (no hint or docstring line needed for them).

    Raises:
        ValueError: no docstring, a parameter without a type hint or without a docstring description, an
            unsupported type, or (unless isolated) a function worker processes cannot load by module and name.
    """
    if not callable(fn):
        raise ValueError(f"{key}: {fn!r} is not a function")
    name = getattr(fn, "__name__", repr(fn))
    hidden = tuple(
        p.name for p in inspect.signature(fn).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
    )
    try:
        function_schema = get_json_schema(_model_view(fn, hidden))["function"]
    except Exception as e:  # transformers' DocstringParsingException / TypeHintParsingException and type errors
        raise ValueError(
            f"{key}: tool {name!r} needs type hints on every parameter and a Google-style docstring with a summary "
            f"and an 'Args:' description of each parameter: {e}"
        ) from e
    parameters = dict(function_schema.get("parameters", {"type": "object", "properties": {}}))
    if not is_isolated:
        spec = spec or callable_spec(fn)
        if spec is None:
            raise ValueError(
                f"{key}: tool {name!r} cannot be loaded by a worker process; define it at module level and name it "
                "by spec, 'package.module:function' or '/path/to/file.py:function'"
            )
    validator = jsonschema.Draft202012Validator(_nullable_to_json_schema(parameters))
    return Tool(
        name=function_schema["name"],
        description=function_schema.get("description", ""),
        parameters=parameters,
        fn=fn,
        spec=spec,
        is_isolated=is_isolated,
        hidden_params=hidden,
        _validator=validator,
    )


class ToolRegistry:
    """The tools of a run, by name."""

    def __init__(self, tools: Iterable[Tool] = (), key: str = "agent.tools") -> None:
        """
        Raises:
            ValueError: two tools share a name; the message names `key`.
        """
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"{key}: two tools are named {tool.name!r}; tool names must be unique")
            self._tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def schemas(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Schemas of the named tools (all when None) for a chat template's `tools=`; unknown names are skipped."""
        chosen = self._tools if names is None else [n for n in names if n in self._tools]
        return [self._tools[n].schema for n in chosen]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)


def load_tools(
    specs: Iterable[str], key: str = "agent.tools", sandbox_limits: SandboxLimits | None = None
) -> ToolRegistry:
    """Load the tools named by built-in name ("calculator", "python") or by spec, checking each at start-up.

    Args:
        specs: built-in names, "package.module:function" or "/path/to/file.py:function".
        key: the config key the list came from; errors name `key[i]`.
        sandbox_limits: limits for the built-in "python" tool (SandboxLimits() defaults when None).

    Returns:
        A ToolRegistry in the order given.

    Raises:
        ValueError: a missing file or module, a function without a docstring or type hints, or duplicate names.
    """
    tools = []
    for i, spec in enumerate(specs):
        item_key = f"{key}[{i}]"
        if spec in BUILTIN_TOOLS:
            fn, is_isolated = BUILTIN_TOOLS[spec]
            if spec == "python" and sandbox_limits is not None:
                fn = builtin_tools.make_python_tool(sandbox_limits)
            tools.append(tool_from_function(fn, item_key, is_isolated=is_isolated))
        else:
            fn = load_callable(spec, item_key)
            tools.append(tool_from_function(fn, item_key, spec=spec))
    return ToolRegistry(tools, key=key)
