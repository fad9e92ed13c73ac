"""Tool-use traces as training tokens: the model's turns trained, the observations between them attended but masked.

An SFT warm-up on traces must see exactly the tokens the agent loop will later produce: each assistant turn is
tokenised on its own (as the engine samples it) and each run of tool / environment messages is tokenised once by
the same ObservationFormatter the loop uses, so SFT and RL agree on every token and on which ones are trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlhf.agent.observation import ObservationFormatter

ASSISTANT = "assistant"


def is_trace(value: Any) -> bool:
    """A trace is a list of chat messages (dicts with "role" and "content"), at least one from the assistant."""
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
        and any(m["role"] == ASSISTANT for m in value)
    )


def encode_trace(
    messages: Sequence[dict[str, Any]], tokenizer: Any, formatter: ObservationFormatter
) -> tuple[list[int], list[int]]:
    """Token ids of a trace that follows a prompt, and its loss mask.

    Args:
        messages: the response part of a conversation: assistant turns and, between them, tool results or
            environment feedback (roles "tool" / "user"); consecutive non-assistant messages form one observation.
        tokenizer: the policy's tokenizer.
        formatter: renders observations as the agent loop does (agent.observation_* settings).

    Returns:
        (ids, loss_mask): loss_mask is 1 on assistant tokens and 0 on observation tokens, one entry per id.

    Raises:
        ValueError: `messages` is not a trace (see is_trace).
    """
    if not is_trace(list(messages)):
        raise ValueError(f"not a trace (a list of chat messages with an assistant turn): {list(messages)!r:.200}")
    ids: list[int] = []
    mask: list[int] = []
    i = 0
    while i < len(messages):
        if messages[i]["role"] == ASSISTANT:
            turn = list(tokenizer.encode(messages[i]["content"], add_special_tokens=False))
            ids += turn
            mask += [1] * len(turn)
            i += 1
            continue
        end = i
        while end < len(messages) and messages[end]["role"] != ASSISTANT:
            end += 1
        # Columnar files fill absent keys with None (parquet structs): drop them, as the loop never sends them.
        observation = [{k: v for k, v in m.items() if v is not None} for m in messages[i:end]]
        tokens = formatter.encode(observation, ids[-1] if ids else None)
        ids += tokens
        mask += [0] * len(tokens)
        i = end
    return ids, mask
