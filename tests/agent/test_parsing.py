"""The Hermes parser reads every <tool_call> block and turns malformed ones into messages for the model."""

import pytest

from rlhf.agent.parsing import HermesToolParser, ToolCall, make_tool_parser


def test_final_answer_has_no_calls() -> None:
    turn = HermesToolParser().parse("The answer is 42.")
    assert turn.is_final and turn.calls == [] and turn.errors == []


def test_several_calls_in_one_turn() -> None:
    text = (
        'Let me compute. <tool_call>{"name": "calculator", "arguments": {"expression": "6*7"}}</tool_call>\n'
        '<tool_call>\n{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}\n</tool_call>'
        '<tool_call>{"name": "now", "parameters": {}}</tool_call><tool_call>{"name": "noargs"}</tool_call>'
    )
    turn = HermesToolParser().parse(text)
    assert turn.calls == [
        ToolCall("calculator", {"expression": "6*7"}),
        ToolCall("add", {"a": 1, "b": 2}),  # arguments as a JSON string
        ToolCall("now", {}),  # "parameters" spelling
        ToolCall("noargs", {}),
    ]
    assert turn.errors == [] and not turn.is_final


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"name": "calc", "arguments": {"x": 1}', "not valid JSON"),
        ('["calc"]', "must be a JSON object"),
        ('{"arguments": {}}', 'no "name" string'),
        ('{"name": "", "arguments": {}}', 'no "name" string'),
        ('{"name": "calc", "arguments": [1, 2]}', "arguments of tool call 'calc' must be a JSON object"),
        ('{"name": "calc", "arguments": "not json"}', "arguments of tool call 'calc' are not a JSON object"),
    ],
)
def test_malformed_calls_become_errors_not_exceptions(body: str, message: str) -> None:
    turn = HermesToolParser().parse(f'<tool_call>{body}</tool_call><tool_call>{{"name": "ok"}}</tool_call>')
    assert turn.calls == [ToolCall("ok", {})]
    assert len(turn.errors) == 1 and message in turn.errors[0]
    assert not turn.is_final


def test_unclosed_block_is_an_error() -> None:
    turn = HermesToolParser().parse('<tool_call>{"name": "calc", "arguments": {"expression": "1+')
    assert turn.calls == [] and "was not closed" in turn.errors[0] and not turn.is_final


def test_registry_by_name_and_spec() -> None:
    assert isinstance(make_tool_parser("hermes"), HermesToolParser)
    assert make_tool_parser("rlhf.agent.parsing:HermesToolParser").stop_strings == ("</tool_call>",)
    with pytest.raises(ValueError, match="agent.tool_parser='json' is not a known tool parser"):
        make_tool_parser("json")
    with pytest.raises(ValueError, match="agent.tool_parser='rlhf.agent.parsing:ToolCall'"):
        make_tool_parser("rlhf.agent.parsing:ToolCall")
