"""Per-row cleaning before training: drop rows that cannot be trained on, and say how many and why."""

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhf.data.rows import check_columns, load_rows
from rlhf.data.tokenize import ToolsOf, apply_chat_template_ids

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

# The reasons a row is dropped, in the order they are checked.
MISSING_PROMPT = "missing_prompt"
MALFORMED_PROMPT = "malformed_prompt"
EMPTY_PROMPT = "empty_prompt"
MISSING_GROUND_TRUTH = "missing_ground_truth"
MISSING_DATA_SOURCE = "missing_data_source"
PROMPT_TOO_LONG = "prompt_too_long"


def _drop_reason(row: dict[str, Any], prompt_key: str) -> str | None:
    """Why this row cannot be used (before tokenizing), or None if it can."""
    prompt = row.get(prompt_key)
    if prompt is None:
        return MISSING_PROMPT
    is_messages = isinstance(prompt, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt
    )
    if not is_messages:
        return MALFORMED_PROMPT
    if not any(m["content"].strip() for m in prompt):
        return EMPTY_PROMPT
    reward_model = row.get("reward_model")
    if not isinstance(reward_model, dict) or reward_model.get("ground_truth") is None:
        return MISSING_GROUND_TRUTH
    if not row.get("data_source"):
        return MISSING_DATA_SOURCE
    return None


def filter_rows(
    rows: list[dict[str, Any]],
    path: str | Path,
    tokenizer: "PreTrainedTokenizerBase | None",
    max_prompt_length: int,
    *,
    prompt_key: str = "prompt",
    tools_of: ToolsOf | None = None,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Drop rows missing a field, with an empty or malformed prompt, or a prompt longer than max_prompt_length.

    Args:
        rows: verl rows read from `path`.
        path: the file they came from (for messages).
        tokenizer: renders the prompt with its chat template to measure its length; None skips the length check.
        max_prompt_length: the longest prompt kept, in tokens (`data.max_prompt_length`).
        prompt_key: the column holding the chat messages (`data.prompt_key`).
        tools_of: each row's tool schemas, rendered into the prompt (agent rollouts), so they count in its length.

    Returns:
        The kept rows (same order, same dict objects) and `{reason: number of rows dropped}` for each reason that
        dropped at least one row.

    Raises:
        ValueError: no row is left; the message names the file and the counts.
    """
    counts: dict[str, int] = {}
    candidates = []
    for row in rows:
        reason = _drop_reason(row, prompt_key)
        if reason is None:
            candidates.append(row)
        else:
            counts[reason] = counts.get(reason, 0) + 1

    kept = candidates
    if tokenizer is not None and candidates:
        tools = [tools_of(row) for row in candidates] if tools_of is not None else None
        lengths = [
            len(ids) for ids in apply_chat_template_ids(tokenizer, [row[prompt_key] for row in candidates], tools)
        ]
        kept = [row for row, length in zip(candidates, lengths, strict=True) if length <= max_prompt_length]
        if len(kept) < len(candidates):
            counts[PROMPT_TOO_LONG] = len(candidates) - len(kept)

    dropped = ", ".join(f"{reason}={count}" for reason, count in counts.items()) or "none"
    if not kept:
        raise ValueError(
            f"data file {path}: no rows left after filtering {len(rows)} rows (dropped: {dropped}); "
            f"check the file's columns and data.max_prompt_length={max_prompt_length}"
        )
    logger.info("data file %s: kept %d of %d rows (dropped: %s)", path, len(kept), len(rows), dropped)
    return kept, counts


def load_prompt_rows(
    path: str | Path,
    tokenizer: "PreTrainedTokenizerBase | None",
    max_prompt_length: int,
    *,
    prompt_key: str = "prompt",
    tools_of: ToolsOf | None = None,
) -> list[dict[str, Any]]:
    """Read a data file, check its columns and filter its rows: the rows a dataloader can use.

    `tools_of` gives a row's tool schemas (agent rollouts): they are rendered into the prompt and count in its length.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unknown extension, a required column is missing, or no row survives filtering.
    """
    rows = load_rows(path)
    check_columns(rows, path, prompt_key=prompt_key)
    kept, _ = filter_rows(rows, path, tokenizer, max_prompt_length, prompt_key=prompt_key, tools_of=tools_of)
    return kept
