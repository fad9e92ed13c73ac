"""From verl rows to SFT batches: which text is the target, what is dropped, and the padded layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sft_recipes import compose_sft
from transformers import AutoTokenizer

from rlhf.sft_trainer import collate, encode_examples, num_sft_steps, sft_target

ROW = {
    "prompt": [{"role": "user", "content": "12+34="}],
    "reward_model": {"ground_truth": "46"},
    "data_source": "arith",
    "extra_info": {"answer": "forty-six"},
}


def test_target_defaults_to_ground_truth_unless_a_response_column_exists() -> None:
    assert sft_target(ROW, "auto") == "46"
    assert sft_target({**ROW, "response": "46!"}, "auto") == "46!"
    assert sft_target(ROW, "extra_info.answer") == "forty-six"
    with pytest.raises(ValueError, match="sft.response_key='extra_info.solution'"):
        sft_target(ROW, "extra_info.solution")


def test_examples_end_with_eos_and_long_rows_are_dropped(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    long_row = {**ROW, "reward_model": {"ground_truth": "9" * 40}}
    cfg = compose_sft("sft_arith_tiny", [f"model.path={tiny_model_dir}", "sft.max_length=16"])
    examples = encode_examples([ROW, long_row], tokenizer, cfg)
    assert len(examples) == 1
    assert tokenizer.decode(examples[0]["prompt_ids"]) == "12+34="
    assert examples[0]["response_ids"] == [
        *tokenizer("46", add_special_tokens=False)["input_ids"],
        tokenizer.eos_token_id,
    ]


def test_collate_matches_the_rollout_layout() -> None:
    from rlhf.sequences import assemble  # noqa: PLC0415

    examples = [{"prompt_ids": [5, 6, 7], "response_ids": [8, 1]}, {"prompt_ids": [9], "response_ids": [10, 11, 12, 1]}]
    ours = collate(examples, pad_id=0)
    theirs = assemble([e["prompt_ids"] for e in examples], [e["response_ids"] for e in examples], 3, 4, pad_id=0)
    for key in ("input_ids", "attention_mask", "position_ids", "responses", "response_mask"):
        assert torch.equal(ours[key], theirs[key]), key


def test_epochs_cap_the_steps(tiny_model_dir: Path) -> None:
    cfg = compose_sft("sft_arith_tiny", ["sft.total_steps=1000", "sft.epochs=2", "sft.batch_size=64"])
    assert num_sft_steps(cfg, num_examples=640) == 20
    cfg = compose_sft("sft_arith_tiny", ["sft.total_steps=7", "sft.epochs=0"])
    assert num_sft_steps(cfg, num_examples=640) == 7


def test_a_trace_target_trains_only_the_assistant_turns(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "12*34"}}</tool_call>'
    trace = [
        {"role": "assistant", "content": call, "name": None},  # parquet fills absent struct keys with None
        {"role": "tool", "name": "calculator", "content": "408"},
        {"role": "assistant", "content": "408", "name": None},
    ]
    row = {**ROW, "prompt": [{"role": "user", "content": "12*34="}], "response": trace}
    assert sft_target(row, "auto") == trace
    cfg = compose_sft("sft_arith_tiny", [f"model.path={tiny_model_dir}", "sft.max_length=160"])
    (example,) = encode_examples([row], tokenizer, cfg)
    observation = "<tool_response>\n408\n</tool_response>\n"
    assert tokenizer.decode(example["response_ids"]) == call + observation + "408<eos>"
    assert example["loss_mask"] == [1] * len(call) + [0] * len(observation) + [1, 1, 1, 1]
    batch = collate([example, {"prompt_ids": [5], "response_ids": [8, 1], "loss_mask": [1, 1]}], pad_id=0)
    width = len(example["response_ids"])
    assert batch["response_mask"][0].tolist() == [float(m) for m in example["loss_mask"]]
    assert batch["response_mask"][1].tolist() == [1.0, 1.0] + [0.0] * (width - 2)
    assert batch["attention_mask"][0, -width:].tolist() == [1] * width  # the tool result is attended to
