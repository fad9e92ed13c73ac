"""From data files (or the built-in task) to prompt Batches: the controller's side of data loading."""

from __future__ import annotations

import logging
from typing import Any

from transformers import PreTrainedTokenizerBase

from rlhf.batch import Batch
from rlhf.config import DataConfig
from rlhf.data import encode_prompts, ensure_arith_dataset, load_prompt_rows, normalize_data_files
from rlhf.data.agent_tasks import ensure_task_dataset
from rlhf.data.tokenize import ToolsOf

logger = logging.getLogger(__name__)


def resolve_data_files(cfg: DataConfig, seed: int) -> tuple[list[str], list[str]]:
    """The train and validation files: the configured ones, or the built-in task written to `data.builtin_dir`.

    `data.train_files` / `data.val_files` may each be one path (as verl users write it) or a list of paths.
    """
    train_files = normalize_data_files(cfg.train_files, "data.train_files")
    if train_files:
        return train_files, normalize_data_files(cfg.val_files, "data.val_files")
    if cfg.builtin_task != "arith":
        train, val = ensure_task_dataset(
            cfg.builtin_task,
            cfg.builtin_dir,
            cfg.builtin_num_train,
            cfg.builtin_num_val,
            seed,
            cfg.builtin_min_digits,
            cfg.builtin_max_digits,
        )
        return [train], [val]
    train, val = ensure_arith_dataset(
        cfg.builtin_dir,
        cfg.builtin_num_train,
        cfg.builtin_num_val,
        seed,
        min_digits=cfg.builtin_min_digits,
        max_digits=cfg.builtin_max_digits,
    )
    return [train], [val]


def load_split(
    files: list[str],
    tokenizer: PreTrainedTokenizerBase,
    max_prompt_length: int,
    *,
    prompt_key: str = "prompt",
    tools_of: ToolsOf | None = None,
) -> list[dict[str, Any]]:
    """Read, check and filter every file of a split (errors name the file and column).

    `prompt_key` is `data.prompt_key`, the column holding the chat messages; `tools_of` gives a row's tool schemas
    (agent rollouts), which count in the prompt's length.
    """
    rows: list[dict[str, Any]] = []
    for path in files:
        rows.extend(load_prompt_rows(path, tokenizer, max_prompt_length, prompt_key=prompt_key, tools_of=tools_of))
    return rows


def rows_to_batch(
    rows: list[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_prompt_length: int,
    batch_index: int,
    seed: int,
    *,
    prompt_key: str = "prompt",
    tools_of: ToolsOf | None = None,
) -> Batch:
    """Prompt rows as a Batch of non-tensor fields: prompt_ids, ground_truth, data_source, extra_info, uid, seed.

    `uid` names the prompt's group (its n responses share it); `sample_seed` makes sampling reproducible for a
    given (seed, batch_index, row) whatever the number of ranks. `prompt_key` is `data.prompt_key`. With `tools_of`
    (agent rollouts) prompts are rendered with each row's tool schemas, and the rows' `messages` (the prompt
    column) and `tools` columns ride along for the environments.
    """
    prompt_ids = encode_prompts(rows, tokenizer, max_prompt_length, prompt_key=prompt_key, tools_of=tools_of)
    agent_fields = {}
    if tools_of is not None:
        agent_fields = {"messages": [r[prompt_key] for r in rows], "tools": [r.get("tools") for r in rows]}
    return Batch(
        non_tensors={
            **agent_fields,
            "prompt_ids": prompt_ids,
            "ground_truth": [str(r["reward_model"]["ground_truth"]) for r in rows],
            "data_source": [r["data_source"] for r in rows],
            "extra_info": [r.get("extra_info") or {} for r in rows],
            "uid": [f"{batch_index}-{i}" for i in range(len(rows))],
            "sample_seed": [(seed * 1_000_003 + batch_index * 10_007 + i) % (2**31) for i in range(len(rows))],
        },
        meta={"batch_index": batch_index},
    )
