"""Observations become tokens once: through the chat template when it has a tool role, else a text template."""

import pytest
from ascii_tokenizer import PLAIN_TEMPLATE, build_ascii_tokenizer

from rlhf.agent.observation import ObservationFormatter, has_tool_role
from rlhf.models.tiny import build_tokenizer


def test_tool_role_detection() -> None:
    assert has_tool_role(build_ascii_tokenizer())
    assert not has_tool_role(build_ascii_tokenizer(PLAIN_TEMPLATE))  # renders tool content, but like a user's
    assert not has_tool_role(build_tokenizer())  # the tiny model's template
    rejecting = "{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tools') }}{% endif %}"
    assert not has_tool_role(build_ascii_tokenizer(rejecting + "{{ m['content'] }}{% endfor %}"))


def test_chat_template_mode_after_a_stop_string() -> None:
    tokenizer = build_ascii_tokenizer()
    formatter = ObservationFormatter(tokenizer)
    assert formatter.uses_chat_template
    # The turn stopped at "</tool_call>" (last token ">"): the template's end-of-turn marker is part of it.
    observation = [{"role": "tool", "content": "42"}, {"role": "tool", "content": "7"}]
    expected = (
        "<|im_end|>\n<|im_start|>user\n<tool_response>\n42\n</tool_response>\n<tool_response>\n7\n</tool_response>"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    last = tokenizer.convert_tokens_to_ids(">")
    assert formatter.render(observation, last) == expected
    ids = formatter.encode(observation, last)
    assert ids == tokenizer.encode(expected, add_special_tokens=False)
    assert ids[0] == tokenizer.eos_token_id and ids[2] == tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_chat_template_mode_after_eos_does_not_repeat_it() -> None:
    tokenizer = build_ascii_tokenizer()
    formatter = ObservationFormatter(tokenizer, mode="chat_template")
    expected = "\n<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    assert formatter.render("42", tokenizer.eos_token_id) == expected


def test_text_mode_with_the_tiny_tokenizer() -> None:
    tokenizer = build_tokenizer()
    formatter = ObservationFormatter(tokenizer, tool_template="Result: {content}\n")
    assert not formatter.uses_chat_template
    assert formatter.render([{"role": "user", "content": "Higher."}]) == "Higher.\n"
    assert formatter.render([{"role": "tool", "content": "42"}, {"role": "user", "content": "Go on."}]) == (
        "Result: 42\nGo on.\n"
    )
    assert formatter.encode("7") == tokenizer.encode("Result: 7\n", add_special_tokens=False)
    assert len(formatter.encode("7")) == len("Result: 7\n")  # one token per character, nothing added


def test_text_mode_default_template_and_braces_in_content() -> None:
    formatter = ObservationFormatter(build_ascii_tokenizer(), mode="text")
    assert formatter.render('{"a": 1}') == '<tool_response>\n{"a": 1}\n</tool_response>\n'


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="agent.observation_mode='chat_template' but the tokenizer's chat template"):
        ObservationFormatter(build_tokenizer(), mode="chat_template")
    with pytest.raises(ValueError, match="agent.observation_tool_template='oops' must contain"):
        ObservationFormatter(build_tokenizer(), tool_template="oops")
