"""Prompt datasets: the verl row format, filtering, tokenizing, the resumable loader and the built-in arith task."""

from rlhf.data.arith import ensure_arith_dataset, make_arith_rows
from rlhf.data.filtering import filter_rows, load_prompt_rows
from rlhf.data.loader import PromptDataLoader
from rlhf.data.rows import check_columns, load_rows, normalize_data_files, write_rows
from rlhf.data.tokenize import encode_prompts

__all__ = [
    "PromptDataLoader",
    "check_columns",
    "encode_prompts",
    "ensure_arith_dataset",
    "filter_rows",
    "load_prompt_rows",
    "load_rows",
    "make_arith_rows",
    "normalize_data_files",
    "write_rows",
]
