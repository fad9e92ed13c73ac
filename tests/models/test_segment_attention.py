"""The segment-wise sdpa ("sdpa_segments"): a packed row attends within each sequence, as separate forwards do, with
no [N, N] mask built; every other call is transformers' sdpa unchanged. Layouts end to end (log-probs, entropy,
losses, gradients against the padded path) are in tests/workers/test_logprob_padding_free.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhf.models.segment_attention import SEGMENT_SDPA, _host_offsets, segment_bounds, segment_sdpa_mask
from rlhf.padding_free import setup_padding_free, varlen_kwargs


def load(path: Path, implementation: str) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=implementation)


def test_segments_start_where_positions_restart() -> None:
    assert segment_bounds(8, torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1]])) == [(0, 3), (3, 5), (5, 6), (6, 8)]
    assert segment_bounds(4, torch.tensor([4, 5, 0, 1])) == [(0, 2), (2, 4)]  # a row need not start at 0
    assert segment_bounds(5) == [(0, 5)]


def test_segments_from_offsets_win_over_positions_and_skip_empty_ones() -> None:
    offsets = torch.tensor([0, 3, 3, 8], dtype=torch.int32)
    assert segment_bounds(8, torch.zeros(1, 8, dtype=torch.long), cu_seq_lens=offsets) == [(0, 3), (3, 8)]
    with pytest.raises(ValueError, match=r"cu_seq_lens \[0, 3, 3, 8\] must run from 0 to the packed row's length 9"):
        segment_bounds(9, cu_seq_lens=offsets)


def test_offsets_are_read_to_the_host_once_per_tensor() -> None:
    # Every layer of a forward gets the same cu_seq_lens tensor: its host copy is reused, not read again.
    offsets = torch.tensor([0, 2, 5], dtype=torch.int32)
    assert _host_offsets(offsets) is _host_offsets(offsets)
    other = torch.tensor([0, 2, 5], dtype=torch.int32)
    assert _host_offsets(other) == [0, 2, 5] and _host_offsets(other) is not _host_offsets(offsets)


def test_a_packed_call_builds_no_mask_and_others_get_sdpas() -> None:
    assert segment_sdpa_mask(batch_size=1, q_length=9, kv_length=9) is None
    padding = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    mask = segment_sdpa_mask(batch_size=2, q_length=4, kv_length=4, attention_mask=padding, allow_is_causal_skip=False)
    assert mask.shape == (2, 1, 4, 4)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    assert torch.equal(mask[1, 0], causal)  # causal where there is no padding
    assert torch.equal(mask[0, 0], causal & padding[0])  # and the padded key hidden


def test_packed_row_equals_separate_forwards_in_values_and_gradients(tiny_model_dir: Path) -> None:
    model = load(tiny_model_dir, SEGMENT_SDPA).train()
    gen = torch.Generator().manual_seed(0)
    sequences = [torch.randint(2, model.config.vocab_size, (1, n), generator=gen) for n in (7, 1, 12, 4)]
    weights = [torch.randn(1, seq.shape[1], model.config.vocab_size, generator=gen) for seq in sequences]

    def grads() -> dict[str, torch.Tensor]:
        out = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return out

    separate = [model(input_ids=seq, use_cache=False).logits for seq in sequences]
    sum(((logits * w).sum() for logits, w in zip(separate, weights, strict=True))).backward()
    separate_grads = grads()
    positions = torch.cat([torch.arange(seq.shape[1]) for seq in sequences])[None]
    packed = model(input_ids=torch.cat(sequences, dim=1), position_ids=positions, use_cache=False).logits
    (packed * torch.cat(weights, dim=1)).sum().backward()
    torch.testing.assert_close(packed, torch.cat(separate, dim=1), atol=1e-5, rtol=0)
    packed_grads = grads()
    assert packed_grads.keys() == separate_grads.keys()
    for name, grad in separate_grads.items():
        scale = grad.abs().max().item()
        torch.testing.assert_close(packed_grads[name], grad, atol=2e-5 * scale, rtol=0, msg=name)
    # With the offsets given (as padding_free_view passes them) the row splits the same way, to the bit.
    lengths = torch.tensor([seq.shape[1] for seq in sequences])
    with torch.no_grad():
        given = model(
            input_ids=torch.cat(sequences, dim=1), position_ids=positions, use_cache=False, **varlen_kwargs(lengths)
        ).logits
    assert torch.equal(given, packed.detach())


def test_padded_batches_and_generation_are_plain_sdpa(tiny_model_dir: Path) -> None:
    segments, sdpa = load(tiny_model_dir, SEGMENT_SDPA).eval(), load(tiny_model_dir, "sdpa").eval()
    ids = torch.randint(2, sdpa.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        torch.testing.assert_close(
            segments(input_ids=ids, attention_mask=mask).logits, sdpa(input_ids=ids, attention_mask=mask).logits
        )
    for rows in (ids, ids[:1]):  # a batch of two without padding, and one row: a cache makes queries shorter than keys
        kwargs = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
        assert torch.equal(segments.generate(rows, **kwargs), sdpa.generate(rows, **kwargs))


@pytest.mark.parametrize(
    ("loaded", "setting", "layout", "implementation"),
    [
        ("sdpa", "auto", "pack", SEGMENT_SDPA),  # sdpa packs one sequence at a time
        ("sdpa", "pack", "pack", SEGMENT_SDPA),
        ("sdpa", "trim", "trim", "sdpa"),
        ("sdpa", "off", "none", "sdpa"),
        ("eager", "auto", "trim", "eager"),  # a packed row on eager would pay N^2 attention
        ("eager", "pack", "pack", "eager"),  # as asked: transformers' block-diagonal mask
    ],
)
def test_setup_picks_the_layout_and_switches_sdpa_to_segments_for_packing(
    tiny_model_dir: Path, loaded: str, setting: str, layout: str, implementation: str
) -> None:
    model = load(tiny_model_dir, loaded)
    assert setup_padding_free(setting, model) == layout
    assert model.config._attn_implementation == implementation
