from pathlib import Path

import pytest
import torch
from transformers import AttentionInterface, AutoModelForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from rlhf.padding_free import check_packing_supported, ensure_packing_supported, padding_free_view
from rlhf.sequences import assemble


def two_rows():
    # input_ids [[0, 5, 6, 7, 1, 2, 0, 0], [0, 0, 0, 8, 3, 4, 9, 0]], P = R = 4.
    return assemble([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]], prompt_length=4, response_length=4, pad_id=0)


def view_of(batch, mode: str):
    return padding_free_view(batch["input_ids"], batch["attention_mask"], batch["position_ids"], 4, mode)


def test_trim_moves_real_tokens_to_the_front_and_cuts_to_the_longest() -> None:
    view = view_of(two_rows(), "trim")
    inputs = view.model_inputs
    assert inputs["input_ids"].tolist() == [[5, 6, 7, 1, 2], [8, 3, 4, 9, 0]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 0]]
    assert "cu_seq_lens_q" not in inputs  # rows stay apart by the padding mask
    # Response token 1 is predicted by prompt token 7 (flat 2), token 2 by 1 (flat 3); row 1 starts at flat 5.
    assert view.source_index.tolist() == [2, 3, 5, 6, 7]
    assert view.response_tokens(two_rows()["responses"]).tolist() == [1, 2, 3, 4, 9]


def test_pack_concatenates_rows_with_restarted_positions() -> None:
    view = view_of(two_rows(), "pack")
    inputs = view.model_inputs
    assert inputs["input_ids"].tolist() == [[5, 6, 7, 1, 2, 8, 3, 4, 9]]
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3]]
    assert inputs["attention_mask"] is None
    assert view.source_index.tolist() == [2, 3, 5, 6, 7]
    # transformers' varlen keywords: the sequences' offsets in the row and the longest, so attention need not
    # find the boundaries from position_ids in every layer.
    assert inputs["cu_seq_lens_q"].tolist() == inputs["cu_seq_lens_k"].tolist() == [0, 5, 9]
    assert inputs["cu_seq_lens_q"].dtype == torch.int32
    assert inputs["max_length_q"] == inputs["max_length_k"] == 5


@pytest.mark.parametrize("mode", ["none", "trim", "pack"])
def test_outputs_map_back_to_the_response_layout(mode: str) -> None:
    # An "identity model": its output at each position is the input token, so each response slot must receive the
    # token just before it in the sequence, and padding slots 0 (all slots are kept by "none").
    view = view_of(two_rows(), mode)
    outputs = view.model_inputs["input_ids"].float()[..., None].repeat(1, 1, 3)  # [rows, width, 3]
    mapped = view.to_response(outputs)
    assert mapped.shape == (2, 4, 3)
    expected = [[7, 1, 2, 0], [8, 3, 4, 9]] if mode == "none" else [[7, 1, 0, 0], [8, 3, 4, 0]]
    assert mapped[..., 0].tolist() == expected


def test_interior_masked_response_tokens_stay_in_the_context() -> None:
    # A tool token inside the response: attention 1, response_mask 0. Only attention_mask decides the layout.
    batch = two_rows()
    batch["response_mask"][1, 1] = 0.0
    view = view_of(batch, "pack")
    assert view.model_inputs["input_ids"].tolist() == [[5, 6, 7, 1, 2, 8, 3, 4, 9]]
    assert view.slot_cols.tolist() == [0, 1, 0, 1, 2]


def test_scatter_is_differentiable() -> None:
    view = view_of(two_rows(), "pack")
    values = torch.ones(5, requires_grad=True)
    (view.scatter(values) * torch.arange(8.0).view(2, 4)).sum().backward()
    assert values.grad.tolist() == [0, 1, 4, 5, 6]


def test_pack_refuses_positions_that_do_not_restart_at_zero() -> None:
    batch = two_rows()
    with pytest.raises(ValueError, match="count each row's real tokens from 0"):
        padding_free_view(batch["input_ids"], batch["attention_mask"], batch["position_ids"] + 1, 4, "pack")


def test_bad_mode_and_empty_micro_batch() -> None:
    batch = two_rows()
    with pytest.raises(ValueError, match="padding_free='packed' must be one of"):
        view_of(batch, "packed")
    with pytest.raises(ValueError, match="no real tokens"):
        padding_free_view(
            batch["input_ids"], torch.zeros_like(batch["attention_mask"]), batch["position_ids"], 4, "trim"
        )


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])  # flex_attention also passes, after ~35 s of compiling
def test_packing_check_passes_where_transformers_honours_restarted_positions(
    implementation: str, tiny_model_dir: Path
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=implementation)
    model.train()
    check_packing_supported(model)
    assert model.training, "the check must restore the training mode"


def causal_only_attention(module, query, key, value, attention_mask, **kwargs):
    """A custom attention that applies a plain causal mask and ignores the one transformers built."""
    return sdpa_attention_forward(module, query, key, value, None, **kwargs)


def test_packing_check_refuses_an_attention_that_ignores_the_packed_mask(tiny_model_dir: Path) -> None:
    AttentionInterface.register("causal_only", causal_only_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register("causal_only", sdpa_mask)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="causal_only")
    assert model.config._attn_implementation == "causal_only"
    with pytest.raises(ValueError, match="not supported with attention implementation 'causal_only'"):
        check_packing_supported(model)


def test_ensure_packing_supported_checks_each_model_once(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    ensure_packing_supported(model)
    assert len(forwards) == 3  # two sequences separately, then packed
    ensure_packing_supported(model)
    assert len(forwards) == 3
