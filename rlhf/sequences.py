"""Packing prompts and responses into the model's inputs: the layout every worker and the trainers share.

Prompts are left-padded and responses right-padded, so position P-1+t always predicts response token t.
"""

from __future__ import annotations

import torch

from rlhf.batch import Batch


def left_pad(rows: list[list[int]], length: int, pad_id: int) -> torch.Tensor:
    out = torch.full((len(rows), length), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            out[i, length - len(row) :] = torch.tensor(row)
    return out


def right_pad(rows: list[list[float]] | list[list[int]], length: int, value: float, dtype: torch.dtype) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=dtype)
    for i, row in enumerate(rows):
        if row:
            out[i, : len(row)] = torch.tensor(row, dtype=dtype)
    return out


def assemble(
    prompt_ids: list[list[int]], response_ids: list[list[int]], prompt_length: int, response_length: int, pad_id: int
) -> Batch:
    """Pack prompts (left-padded to `prompt_length`) and responses (right-padded to `response_length`).

    Fixed lengths (`data.max_prompt_length`, `rollout.max_response_length`) make every rank's shard the same width,
    so data-parallel results concatenate.

    Returns:
        Batch with prompts [B, P], responses [B, R], input_ids / attention_mask / position_ids [B, P+R],
        response_mask [B, R] float32.
    """
    longest = max(len(p) for p in prompt_ids)
    if longest > prompt_length:
        raise ValueError(f"a prompt of {longest} tokens exceeds data.max_prompt_length={prompt_length}")
    prompts = left_pad(prompt_ids, prompt_length, pad_id)
    responses = right_pad(response_ids, response_length, pad_id, torch.long)
    prompt_mask = left_pad([[1] * len(p) for p in prompt_ids], prompt_length, 0)
    response_mask = right_pad([[1] * len(r) for r in response_ids], response_length, 0, torch.long)
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
    # Positions count real tokens only, so left padding does not shift them (vLLM sees unpadded prompts).
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return Batch(
        {
            "prompts": prompts,
            "responses": responses,
            "input_ids": torch.cat([prompts, responses], dim=1),
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "response_mask": response_mask.float(),
        }
    )


def last_token_index(response_mask: torch.Tensor) -> torch.Tensor:
    """[B] long: the index of each response's last loss token (0 for an empty response), where sequence scores live.

    With interior zeros in the mask (a multi-turn response whose tool tokens are context, not actions) this is the
    last token the policy generated, not the last position.
    """
    positions = torch.arange(response_mask.shape[1], device=response_mask.device).expand_as(response_mask)
    return torch.where(response_mask.bool(), positions, -1).amax(dim=1).clamp(min=0)
