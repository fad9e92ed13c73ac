"""Padding-free forwards: one micro-batch laid out without padding, and model outputs mapped back to [B, R].

The project's layout pads every row to P+R (prompt left-padded, response right-padded; `rlhf.sequences`). Here a
micro-batch is re-laid out for the model (issue 13):
- "trim": every row's real tokens moved to the front and the batch cut to its longest sequence, [b, L_max], with a
  right-padding attention mask. Works with every attention implementation.
- "pack": all real tokens in one row [1, N] with position_ids restarting at 0 per sequence and attention_mask None;
  flash-attention and "sdpa_segments" (`rlhf.models.segment_attention`) attend within each sequence (varlen), and
  transformers (>= 4.53) builds a block-diagonal causal mask for eager / flex / plain sdpa (quadratic in N).
  `check_packing_supported` proves the model honours that before it is trusted.
- "none": the padded layout unchanged.
Only real tokens are kept: lengths come from `attention_mask`, so tool tokens inside a multi-turn response
(attention 1, response_mask 0) stay in the context.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from rlhf.batch import Batch
from rlhf.models.segment_attention import SEGMENT_SDPA

logger = logging.getLogger(__name__)

PADDING_FREE_MODES = ("none", "trim", "pack")
_PACKING_VERIFIED: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # models that passed check_packing_supported


@dataclass(frozen=True)
class PaddingFreeView:
    """A micro-batch in the model's padding-free layout, and the map from model outputs back to the response.

    Attributes:
        mode: "none", "trim" or "pack".
        model_inputs: input_ids / position_ids [rows, width] and attention_mask [rows, width] (None when packed);
            packed, also transformers' varlen keywords: cu_seq_lens_q / _k [S + 1] (int32 offsets of the S
            sequences) and max_length_q / _k (the longest). Pass as `model(**view.model_inputs, use_cache=False)`.
        source_index: [n] flat index into the model outputs viewed as [rows * width, ...] of the position that
            predicts each kept response token (the token just before it).
        slot_rows: [n] row in [B, R] of each kept response token.
        slot_cols: [n] column in [B, R] of each kept response token.
        batch_size: B.
        response_length: R.
    """

    mode: str
    model_inputs: dict[str, torch.Tensor | int | None]
    source_index: torch.Tensor
    slot_rows: torch.Tensor
    slot_cols: torch.Tensor
    batch_size: int
    response_length: int

    def select(self, outputs: torch.Tensor) -> torch.Tensor:
        """The outputs at the positions predicting the kept response tokens: [rows, width, *rest] -> [n, *rest]."""
        return outputs.flatten(0, 1)[self.source_index]

    def response_tokens(self, responses: torch.Tensor) -> torch.Tensor:
        """The kept response tokens, [B, R] -> [n] (the targets of `select`'s positions)."""
        return responses[self.slot_rows, self.slot_cols]

    def scatter(self, values: torch.Tensor) -> torch.Tensor:
        """Per-token values back in the response layout, [n, *rest] -> [B, R, *rest], zero where nothing was kept.

        Differentiable: gradients flow from the [B, R] result back to `values`.
        """
        out = values.new_zeros((self.batch_size, self.response_length, *values.shape[1:]))
        return out.index_put((self.slot_rows, self.slot_cols), values)

    def to_response(self, outputs: torch.Tensor) -> torch.Tensor:
        """`scatter(select(outputs))`: [rows, width, *rest] model outputs -> [B, R, *rest]."""
        return self.scatter(self.select(outputs))


def padding_free_view(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    response_length: int,
    mode: str,
) -> PaddingFreeView:
    """Lay out a micro-batch of the project's padded layout without padding.

    Args:
        input_ids: [B, P+R] prompt left-padded to P, response right-padded to R.
        attention_mask: [B, P+R] 1 at real tokens (prompt, response, tool tokens inside the response).
        position_ids: [B, P+R] counting real tokens from 0 (as `rlhf.sequences.assemble` makes them).
        response_length: R.
        mode: "none", "trim" or "pack".

    Returns:
        The view. With "none" every response slot is kept (the padded path, unchanged); otherwise a slot is kept
        when its token and the token before it are real, and `scatter` leaves the other slots zero.

    Raises:
        ValueError: unknown mode, no prompt column (P = 0), a micro-batch without real tokens, or (pack) positions
            that do not count each row's real tokens from 0, which packing relies on to find sequence boundaries.
    """
    if mode not in PADDING_FREE_MODES:
        raise ValueError(f"padding_free={mode!r} must be one of {PADDING_FREE_MODES}")
    batch_size, width = input_ids.shape
    prompt_width = width - response_length
    if prompt_width < 1:
        raise ValueError(f"inputs of width {width} leave no prompt column before R={response_length} response tokens")
    rows = torch.arange(batch_size, device=input_ids.device)
    # Position prompt_width-1+t predicts response token t.
    predicting, predicted = slice(prompt_width - 1, width - 1), slice(prompt_width, width)
    if mode == "none":
        flat = rows[:, None] * width + torch.arange(width, device=input_ids.device)  # [B, P+R]
        kept = torch.ones(batch_size, response_length, dtype=torch.bool, device=input_ids.device)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        return _view(mode, inputs, flat[:, predicting], kept, response_length)

    real = attention_mask.bool()
    lengths = real.sum(dim=1)  # [B]
    rank = real.long().cumsum(dim=1) - 1  # [B, P+R]: index of each real token among its row's real tokens
    if mode == "trim":
        num_rows, out_width = batch_size, int(lengths.max())
        flat = rows[:, None] * out_width + rank
    else:
        num_rows, out_width = 1, int(lengths.sum())
        flat = (lengths.cumsum(dim=0) - lengths)[:, None] + rank
        if not torch.equal(position_ids[real], rank[real]):
            raise ValueError(
                "padding_free='pack' needs position_ids that count each row's real tokens from 0 "
                "(attention_mask.cumsum(-1) - 1); the sequence boundaries of a packed row are read from them"
            )
    if out_width == 0:
        raise ValueError("the micro-batch has no real tokens (attention_mask is all zero)")
    targets = flat[real]
    packed_ids = input_ids.new_zeros(num_rows * out_width)  # token 0 fills trim's right padding (masked out)
    packed_ids[targets] = input_ids[real]
    packed_positions = position_ids.new_zeros(num_rows * out_width)
    packed_positions[targets] = position_ids[real]
    inputs: dict[str, torch.Tensor | int | None] = {
        "input_ids": packed_ids.view(num_rows, out_width),
        "attention_mask": None,
        "position_ids": packed_positions.view(num_rows, out_width),
    }
    if mode == "trim":
        columns = torch.arange(out_width, device=input_ids.device)
        inputs["attention_mask"] = (columns[None, :] < lengths[:, None]).to(attention_mask.dtype)  # [B, L_max]
    else:
        inputs |= varlen_kwargs(lengths)
    kept = real[:, predicted] & real[:, predicting]  # [B, R]
    return _view(mode, inputs, flat[:, predicting], kept, response_length)


def varlen_kwargs(lengths: torch.Tensor) -> dict[str, torch.Tensor | int]:
    """transformers' keywords for a packed row of sequences of these lengths ([S], on the model's device):
    cu_seq_lens_q / _k (int32 offsets [S + 1]) and max_length_q / _k. With them flash-attention and "sdpa_segments"
    take the sequence boundaries as given instead of finding them from position_ids in every layer (a host sync
    per layer on CUDA)."""
    offsets = torch.nn.functional.pad(lengths.cumsum(dim=0), (1, 0)).to(torch.int32)
    longest = int(lengths.max())
    return {"cu_seq_lens_q": offsets, "cu_seq_lens_k": offsets, "max_length_q": longest, "max_length_k": longest}


def _view(
    mode: str,
    inputs: dict[str, torch.Tensor | int | None],
    source: torch.Tensor,
    kept: torch.Tensor,
    response_length: int,
) -> PaddingFreeView:
    slot_rows, slot_cols = kept.nonzero(as_tuple=True)
    return PaddingFreeView(
        mode=mode,
        model_inputs=inputs,
        source_index=source[kept],
        slot_rows=slot_rows,
        slot_cols=slot_cols,
        batch_size=kept.shape[0],
        response_length=response_length,
    )


def response_values(model: nn.Module, batch: Batch, *, padding_free: str = "none") -> torch.Tensor:
    """The critic's values of the states before each response token, optionally without padding.

    Args:
        model: a token-classification model with one label (or its DeepSpeed engine), on the batch's device.
        batch: input_ids / attention_mask / position_ids [B, P+R], responses and response_mask [B, R].
        padding_free: "none", "trim" or "pack" (see the module docstring; "pack" runs `ensure_packing_supported`).

    Returns:
        values [B, R] float32, zero where response_mask is 0.
    """
    if padding_free == "pack":
        ensure_packing_supported(getattr(model, "module", model))  # a DeepSpeed engine holds the HF model in .module
    view = padding_free_view(
        batch["input_ids"], batch["attention_mask"], batch["position_ids"], batch["responses"].shape[1], padding_free
    )
    logits = model(**view.model_inputs, use_cache=False).logits  # [rows, width, 1]
    return view.to_response(logits[..., 0]).float() * batch["response_mask"]


def check_packing_supported(model: nn.Module) -> None:
    """Prove that the model's attention keeps packed sequences apart; call once before using padding_free="pack".

    Runs two short random sequences separately and packed into one row (restarted position_ids, attention_mask
    None, the keywords of `varlen_kwargs`), in eval mode without gradients, and compares the outputs. Under ZeRO-3
    every rank must call it (the forward gathers parameters).

    Args:
        model: a Hugging Face model returning `.logits` (causal LM or token classifier), on its device.

    Raises:
        ValueError: packed outputs differ from the separate ones beyond rounding, naming the attention
            implementation (`model.config._attn_implementation`).
    """
    implementation = getattr(model.config, "_attn_implementation", None)
    parameter = next(model.parameters())
    generator = torch.Generator().manual_seed(0)
    sequences = [torch.randint(0, model.config.vocab_size, (1, n), generator=generator) for n in (7, 5)]
    positions = [torch.arange(seq.shape[1])[None] for seq in sequences]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            separate = torch.cat(
                [_logits(model, ids, pos, parameter.device) for ids, pos in zip(sequences, positions, strict=True)],
                dim=1,
            )
            lengths = torch.tensor([seq.shape[1] for seq in sequences], device=parameter.device)
            packed = _logits(
                model,
                torch.cat(sequences, dim=1),
                torch.cat(positions, dim=1),
                parameter.device,
                **varlen_kwargs(lengths),  # as padding_free_view passes them
            )
    finally:
        model.train(was_training)
    error = (packed - separate).abs().max().item()
    scale = max(separate.abs().max().item(), 1e-6)
    # Rounding alone stays far below these (outputs are O(scale)); a leak across the boundary is O(scale).
    tolerance = 1e-3 if parameter.dtype == torch.float32 else 5e-2
    if not error <= tolerance * scale:
        raise ValueError(
            f"padding_free='pack' is not supported with attention implementation {implementation!r}: two sequences "
            f"packed into one row (position_ids restarting at 0, attention_mask None) gave outputs differing from "
            f"separate forwards by {error:.3g} (relative {error / scale:.3g}, tolerance {tolerance}), so packed "
            f"sequences would attend to each other. Use an implementation that honours restarted positions "
            f"(flash_attention_2, sdpa, eager or flex_attention with transformers >= 4.53), or padding_free='trim'."
        )
    logger.info("packing check passed for attention %r (max difference %.3g)", implementation, error)


def ensure_packing_supported(model: nn.Module) -> None:
    """`check_packing_supported` once per model object; later calls return at once.

    The padding-free forwards call it on their first "pack" forward, so packing is never used unchecked. All
    data-parallel ranks reach that forward together, which ZeRO-3 needs.

    Raises:
        ValueError: from `check_packing_supported`.
    """
    if model not in _PACKING_VERIFIED:
        check_packing_supported(model)
        _PACKING_VERIFIED.add(model)


def _logits(
    model: nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor, device: torch.device, **varlen: object
) -> torch.Tensor:
    # use_cache=False matters: with a cache transformers skips packed-sequence detection (masking_utils).
    out = model(input_ids=input_ids.to(device), position_ids=position_ids.to(device), use_cache=False, **varlen)
    return out.logits.float()


def setup_padding_free(setting: str, model: nn.Module) -> str:
    """The layout a model's training-side forwards use for `model.padding_free`; an sdpa model that will pack is
    switched to the segment-wise sdpa ("sdpa_segments", `rlhf.models.segment_attention`).

    "off" -> "none"; "trim" -> "trim"; "auto" -> "pack" where attention is varlen (flash-attention, or sdpa run one
    sequence at a time), else "trim" (eager / flex pay full quadratic attention over a packed row); "pack" as asked,
    verified by `ensure_packing_supported` on its first forward.
    """
    if setting == "off":
        return "none"
    if setting == "trim":
        return "trim"
    implementation = str(getattr(model.config, "_attn_implementation", ""))
    if implementation == "sdpa":
        model.set_attn_implementation(SEGMENT_SDPA)
        implementation = SEGMENT_SDPA
    if setting == "pack" or implementation == SEGMENT_SDPA or implementation.startswith("flash_attention"):
        return "pack"
    return "trim"
