"""Varlen attention without flash-attention: sdpa over each sequence of a packed row separately (issue 13).

A packed row [1, N] holds several sequences back to back with position_ids restarting at 0 at each. With transformers'
own "sdpa" such a row gets a block-diagonal [N, N] mask, so attention costs N^2 whatever the sequences' lengths;
that is why packing did not pay on CPU. "sdpa_segments" runs causal sdpa once per sequence (the segments start where
position_ids is 0), so attention costs the sum of the squared lengths, as flash-attention's varlen kernel does, and
the projections and MLPs see only real tokens.

The segments come from `cu_seq_lens_q` (transformers' packed-sequence keyword, which `rlhf.padding_free` passes
for a packed row) when given, read to the host once per forward rather than once per layer, else from position_ids.
Every other call is plain transformers sdpa: several rows, a padding mask, or a query shorter than its keys
(generation with a cache). Loading a model with `attn_implementation="sdpa_segments"` needs this module imported
(`rlhf.padding_free` imports it); `rlhf.padding_free.setup_padding_free` switches sdpa models to it for packing.
"""

from __future__ import annotations

import weakref

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

SEGMENT_SDPA = "sdpa_segments"


def _is_packed_call(query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None) -> bool:
    """One row, no mask and as many queries as keys: causal attention within the row's sequences."""
    return attention_mask is None and query.shape[0] == 1 and query.shape[2] == key.shape[2]


def segment_bounds(
    length: int, position_ids: torch.Tensor | None = None, cu_seq_lens: torch.Tensor | None = None
) -> list[tuple[int, int]]:
    """(start, end) of each non-empty sequence of a packed row.

    Args:
        length: the row's length.
        position_ids: [1, length] or [length]: a sequence starts at position 0 (and at the row's start).
        cu_seq_lens: [S + 1] offsets of the row's S sequences (0, len_0, len_0 + len_1, ..., length); wins over
            position_ids. Neither given: one sequence.

    Raises:
        ValueError: cu_seq_lens that do not run from 0 to the row's length.
    """
    if cu_seq_lens is not None:
        offsets = _host_offsets(cu_seq_lens)
        if offsets[0] != 0 or offsets[-1] != length:
            raise ValueError(f"cu_seq_lens {offsets} must run from 0 to the packed row's length {length}")
    elif position_ids is not None:
        offsets = (position_ids.reshape(-1) == 0).nonzero().flatten().tolist()
        if not offsets or offsets[0] != 0:
            offsets.insert(0, 0)
        offsets.append(length)
    else:
        offsets = [0, length]
    return [(start, end) for start, end in zip(offsets[:-1], offsets[1:], strict=True) if end > start]


# Every layer of one forward gets the same cu_seq_lens tensor: its host copy is kept for that tensor only, so a CUDA
# forward synchronises once for it, not once per layer.
_last_offsets: tuple[weakref.ref, list[int]] | None = None


def _host_offsets(cu_seq_lens: torch.Tensor) -> list[int]:
    global _last_offsets
    if _last_offsets is not None and _last_offsets[0]() is cu_seq_lens:
        return _last_offsets[1]
    offsets = cu_seq_lens.tolist()
    _last_offsets = (weakref.ref(cu_seq_lens), offsets)
    return offsets


def segment_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: query [B, H, Q, D], key / value [B, H_kv, K, D] -> [B, Q, H, D], None."""
    if not _is_packed_call(query, key, attention_mask):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    bounds = segment_bounds(
        query.shape[2], position_ids=kwargs.pop("position_ids", None), cu_seq_lens=kwargs.get("cu_seq_lens_q")
    )
    outputs = [
        sdpa_attention_forward(
            module,
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            None,  # causal (as the module is) within the sequence
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )[0]
        for start, end in bounds
    ]
    return torch.cat(outputs, dim=1), None


def segment_sdpa_mask(
    batch_size: int, q_length: int, kv_length: int, attention_mask: torch.Tensor | None = None, **kwargs
) -> torch.Tensor | None:
    """transformers' mask interface: no mask for a packed call (the attention splits by position_ids instead of
    reading an [N, N] block-diagonal mask), else sdpa's own mask."""
    if attention_mask is None and batch_size == 1 and q_length == kv_length:
        return None
    return sdpa_mask(
        batch_size=batch_size, q_length=q_length, kv_length=kv_length, attention_mask=attention_mask, **kwargs
    )


AttentionInterface.register(SEGMENT_SDPA, segment_sdpa_attention)
AttentionMaskInterface.register(SEGMENT_SDPA, segment_sdpa_mask)
