"""Reading tool calls out of a model turn: parsers by name (`agent.tool_parser`), "hermes" the default.

A parser never raises on model output: a malformed call becomes a parse error whose message goes back to the
model (and counts as a tool error), so the model can correct itself on the next turn.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from rlhf.plugins import load_object


@dataclass
class ToolCall:
    """One call the model asked for."""

    name: str
    arguments: dict[str, Any]


@dataclass
class ParsedTurn:
    """What a model turn asked for: tool calls, and messages for the calls that could not be read."""

    calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def is_final(self) -> bool:
        """The turn attempted no tool call: it is the model's final answer."""
        return not self.calls and not self.errors


class ToolParser(Protocol):
    """Turns a model turn's text into tool calls."""

    stop_strings: tuple[str, ...]
    """Strings that end a tool call; a rollout may stop generating there (kept in the output) to run the call."""

    def parse(self, text: str) -> ParsedTurn: ...


class HermesToolParser:
    """Hermes / Qwen style: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks, any number a turn.

    "arguments" may also be a JSON string holding the object (some models emit that); "parameters" is accepted as
    another name for it. An opening tag with no closing tag (a turn cut off mid-call) is a parse error.
    """

    open_tag, close_tag = "<tool_call>", "</tool_call>"
    stop_strings = ("</tool_call>",)

    def __init__(self) -> None:
        self._block = re.compile(re.escape(self.open_tag) + r"(.*?)" + re.escape(self.close_tag), re.DOTALL)

    def parse(self, text: str) -> ParsedTurn:
        turn = ParsedTurn()
        end = 0
        for match in self._block.finditer(text):
            end = match.end()
            call = self._parse_block(match.group(1), turn.errors)
            if call is not None:
                turn.calls.append(call)
        if self.open_tag in text[end:]:
            turn.errors.append(f"Error: a {self.open_tag} block was not closed with {self.close_tag}")
        return turn

    def _parse_block(self, body: str, errors: list[str]) -> ToolCall | None:
        """The call in one block's body, or None after appending the reason to errors."""
        try:
            payload = json.loads(body)
        except json.JSONDecodeError as e:
            errors.append(
                f"Error: the tool call is not valid JSON ({e.msg} at character {e.pos}): {body.strip()!r:.200}"
            )
            return None
        if not isinstance(payload, dict):
            errors.append(
                f'Error: a tool call must be a JSON object {{"name": ..., "arguments": {{...}}}}, got {body.strip()!r:.200}'
            )
            return None
        name = payload.get("name")
        if not isinstance(name, str) or not name:
            errors.append(f'Error: the tool call has no "name" string: {body.strip()!r:.200}')
            return None
        arguments = payload.get("arguments", payload.get("parameters", {}))
        if isinstance(arguments, str):  # arguments sent as a JSON-encoded string
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                errors.append(f"Error: the arguments of tool call {name!r} are not a JSON object: {arguments!r:.200}")
                return None
        if not isinstance(arguments, dict):
            errors.append(f"Error: the arguments of tool call {name!r} must be a JSON object, got {arguments!r:.200}")
            return None
        return ToolCall(name=name, arguments=arguments)


TOOL_PARSERS: dict[str, type] = {"hermes": HermesToolParser}


def make_tool_parser(name: str, key: str = "agent.tool_parser") -> ToolParser:
    """A parser by registered name ("hermes") or by spec of a class ("package.module:Class", "/path/f.py:Class").

    Raises:
        ValueError: neither a registered name nor a loadable class with a `parse` method; the message names `key`.
    """
    if name in TOOL_PARSERS:
        return TOOL_PARSERS[name]()
    if ":" not in name:
        raise ValueError(f"{key}={name!r} is not a known tool parser; choose one of {sorted(TOOL_PARSERS)} or a spec")
    cls = load_object(name, key)
    try:
        parser = cls()
    except Exception as e:
        raise ValueError(f"{key}={name!r}: constructing the parser with no arguments failed: {e!r}") from e
    if not callable(getattr(parser, "parse", None)):
        raise ValueError(f"{key}={name!r}: {type(parser).__name__} has no parse(text) method")
    if not hasattr(parser, "stop_strings"):
        parser.stop_strings = ()
    return parser
