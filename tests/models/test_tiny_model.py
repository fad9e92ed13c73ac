"""The tiny model's tokenizer: the character vocabulary, optionally padded to a round size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.models.tiny import CHARACTERS, SPEC_FILE, TinyModelSpec, build_tiny_model, build_tokenizer


def test_padding_adds_unused_tokens_and_keeps_the_characters() -> None:
    plain, padded = build_tokenizer(), build_tokenizer(vocab_size=128)
    assert len(plain) == len(CHARACTERS) + 2 == 99 and len(padded) == 128  # the characters, pad and eos
    assert padded("12+3=")["input_ids"] == plain("12+3=")["input_ids"]
    assert padded.convert_ids_to_tokens(127) == "<unused_28>"  # 128 - 99 = 29 fillers, the last is 28
    with pytest.raises(ValueError, match="vocab_size=10 is below the 99"):
        build_tokenizer(vocab_size=10)


def test_padded_model_has_the_padded_embedding(tmp_path: Path) -> None:
    out = build_tiny_model(tmp_path / "m", TinyModelSpec(vocab_size=112))
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 112
    assert json.loads((out / SPEC_FILE).read_text())["vocab_size"] == 112


def test_default_spec_record_has_no_vocab_size(tiny_model_dir: Path) -> None:
    """Folders built before the option existed keep matching the default spec (no rebuild)."""
    assert "vocab_size" not in json.loads((tiny_model_dir / SPEC_FILE).read_text())
