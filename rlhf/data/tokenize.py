"""Turning chat prompts into token ids with the tokenizer's chat template (with the row's tool schemas, if any)."""

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Messages = list[dict[str, str]]
ToolSchemas = list[dict[str, Any]]
ToolsOf = Callable[[dict[str, Any]], "ToolSchemas | None"]
"""A row's tool schemas for the chat template's `tools=` (agent rollouts), or None when it offers none."""

# apply_chat_template on this many conversations at once: batching amortises the Jinja render set-up.
_CHAT_TEMPLATE_BATCH = 512


def _as_token_lists(encoded: Any, num_conversations: int) -> list[list[int]]:
    """Normalise what `apply_chat_template(..., tokenize=True)` returns to one list of ids per conversation.

    transformers < 5 returns `list[list[int]]` for a batch; >= 5 defaults to `return_dict=True` and returns a
    BatchEncoding whose `input_ids` is that list (or a tensor when `return_tensors` is set).
    """
    if hasattr(encoded, "keys") and "input_ids" in encoded.keys():
        encoded = encoded["input_ids"]
    if hasattr(encoded, "tolist"):
        encoded = encoded.tolist()
    ids = [list(map(int, seq)) for seq in encoded]
    assert len(ids) == num_conversations, f"chat template gave {len(ids)} sequences for {num_conversations} prompts"
    return ids


def apply_chat_template_ids(
    tokenizer: "PreTrainedTokenizerBase",
    conversations: Sequence[Messages],
    tools: Sequence[ToolSchemas | None] | None = None,
) -> list[list[int]]:
    """Token ids of each conversation rendered with the chat template and a generation prompt.

    Args:
        tokenizer: a Hugging Face tokenizer with a `chat_template`.
        conversations: chat messages per prompt, `[{"role": "user", "content": "..."}]`.
        tools: per conversation, the tool schemas the template shows the model (None: no tools); None for all.

    Returns:
        One `list[int]` per conversation, in order.
    """
    if tools is None:
        tools = [None] * len(conversations)
    # Conversations offering the same tools render in one batched call.
    groups: dict[str, list[int]] = {}
    for i, schemas in enumerate(tools):
        groups.setdefault(json.dumps(schemas, sort_keys=True), []).append(i)
    ids: list[list[int]] = [[] for _ in conversations]
    for members in groups.values():
        schemas = tools[members[0]]
        for start in range(0, len(members), _CHAT_TEMPLATE_BATCH):
            chunk = members[start : start + _CHAT_TEMPLATE_BATCH]
            encoded = tokenizer.apply_chat_template(
                [list(conversations[i]) for i in chunk],
                tools=schemas or None,
                add_generation_prompt=True,
                tokenize=True,
            )
            for i, seq in zip(chunk, _as_token_lists(encoded, len(chunk)), strict=True):
                ids[i] = seq
    return ids


def encode_prompts(
    rows: Sequence[dict[str, Any]],
    tokenizer: "PreTrainedTokenizerBase",
    max_prompt_length: int,
    *,
    prompt_key: str = "prompt",
    tools_of: ToolsOf | None = None,
) -> list[list[int]]:
    """Prompt token ids for each row (chat template with generation prompt), unpadded.

    Args:
        rows: verl rows; `row[prompt_key]` holds the chat messages.
        tokenizer: a Hugging Face tokenizer with a `chat_template`.
        max_prompt_length: the longest prompt allowed (`data.max_prompt_length`).
        prompt_key: the column holding the chat messages (`data.prompt_key`).
        tools_of: each row's tool schemas for the template (agent rollouts); None renders without tools.

    Returns:
        One `list[int]` per row, each of length <= max_prompt_length.

    Raises:
        ValueError: a prompt is longer than max_prompt_length (filter_rows should have dropped it).
    """
    tools = [tools_of(row) for row in rows] if tools_of is not None else None
    ids = apply_chat_template_ids(tokenizer, [row[prompt_key] for row in rows], tools)
    for i, seq in enumerate(ids):
        if len(seq) > max_prompt_length:
            raise ValueError(
                f"prompt of row {i} has {len(seq)} tokens > data.max_prompt_length={max_prompt_length}; "
                "filter rows with rlhf.data.filter_rows first, or raise data.max_prompt_length"
            )
    return ids
