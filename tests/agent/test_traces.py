"""Tool-use traces as SFT tokens: assistant turns trained, observations masked, tokenised as the agent loop does."""

import pytest
from ascii_tokenizer import build_ascii_tokenizer

from rlhf.agent.observation import ObservationFormatter
from rlhf.agent.traces import encode_trace, is_trace
from rlhf.models.tiny import build_tokenizer

CALL = '<tool_call>{"name": "calculator", "arguments": {"expression": "2*3"}}</tool_call>'
TRACE = [
    {"role": "assistant", "content": CALL},
    {"role": "tool", "name": "calculator", "content": "6"},
    {"role": "assistant", "content": "6"},
]


def test_text_mode_trace() -> None:
    tokenizer = build_tokenizer()  # the tiny template has no tool role: the text template renders observations
    ids, mask = encode_trace(TRACE, tokenizer, ObservationFormatter(tokenizer))
    observation = "<tool_response>\n6\n</tool_response>\n"
    assert tokenizer.decode(ids) == CALL + observation + "6"
    assert mask == [1] * len(CALL) + [0] * len(observation) + [1]


def test_chat_template_trace_matches_the_formatter_and_merges_consecutive_observations() -> None:
    tokenizer = build_ascii_tokenizer()
    formatter = ObservationFormatter(tokenizer)
    assert formatter.uses_chat_template
    trace = [TRACE[0], TRACE[1], {"role": "tool", "name": "calculator", "content": "7", "extra": None}, TRACE[2]]
    ids, mask = encode_trace(trace, tokenizer, formatter)
    call_ids = tokenizer.encode(CALL, add_special_tokens=False)
    observation = formatter.encode(
        [
            {"role": "tool", "name": "calculator", "content": "6"},
            {"role": "tool", "name": "calculator", "content": "7"},
        ],
        call_ids[-1],
    )
    assert ids == call_ids + observation + tokenizer.encode("6", add_special_tokens=False)
    assert mask == [1] * len(call_ids) + [0] * len(observation) + [1]


def test_not_a_trace() -> None:
    assert not is_trace("46") and not is_trace([]) and not is_trace([{"role": "tool", "content": "6"}])
    with pytest.raises(ValueError, match="not a trace"):
        encode_trace([{"role": "user", "content": "hi"}], build_tokenizer(), ObservationFormatter(build_tokenizer()))
