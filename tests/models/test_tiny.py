"""The tiny model's tokenizer: one token per character, the same ids after a reload, and stale folders rebuilt."""

import json
from pathlib import Path

from transformers import AutoTokenizer

from rlhf.models.tiny import CHARACTERS, SPEC_FILE, build_tiny_model, build_tokenizer

TOOL_CALL = '<tool_call>{"name": "calculator", "arguments": {"expression": "123*456"}}</tool_call>'


def test_every_character_is_one_token_and_round_trips() -> None:
    tokenizer = build_tokenizer()
    for text in ("a b\nc", TOOL_CALL, "12*34=\t[x]|y~"):
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert len(ids) == len(text)
        assert tokenizer.decode(ids) == text
    assert len(tokenizer) == len(CHARACTERS) + 2
    assert tokenizer.convert_tokens_to_ids(["<pad>", "<eos>"]) == [tokenizer.pad_token_id, tokenizer.eos_token_id]
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1)


def test_reloaded_tokenizer_gives_the_same_ids(tiny_model_dir: Path) -> None:
    reloaded = AutoTokenizer.from_pretrained(tiny_model_dir)
    original = build_tokenizer()
    text = "Question: 12 * 34?\n" + TOOL_CALL
    assert reloaded.encode(text, add_special_tokens=False) == original.encode(text, add_special_tokens=False)
    assert len(reloaded.encode("a b\nc", add_special_tokens=False)) == 5  # spaces and newlines kept
    assert reloaded.decode(reloaded.encode(text, add_special_tokens=False)) == text
    messages = [{"role": "user", "content": "1 + 2 ="}]
    assert reloaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == "1 + 2 ="


def test_a_folder_from_an_older_tokenizer_is_rebuilt(tmp_path: Path) -> None:
    out = build_tiny_model(tmp_path / "m")
    record = json.loads((out / SPEC_FILE).read_text())
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(out) == out and (out / "model.safetensors").stat().st_mtime_ns == stamp  # reused
    del record["tokenizer_version"]  # as written before the tokenizer had a version
    (out / SPEC_FILE).write_text(json.dumps(record))
    build_tiny_model(out)
    assert json.loads((out / SPEC_FILE).read_text())["tokenizer_version"] >= 2
    assert (out / "model.safetensors").stat().st_mtime_ns != stamp
