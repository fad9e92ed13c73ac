"""The verl row format: reading and writing prompt datasets (.parquet, .jsonl) and checking their columns.

A row is a plain dict:
    {"prompt": [{"role": "user", "content": "12+34="}],
     "reward_model": {"ground_truth": "46", "style": "rule"},
     "data_source": "arith",
     "extra_info": {...}}            # optional
"""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_SUFFIXES = (".parquet",)
JSONL_SUFFIXES = (".jsonl", ".json")
_PARQUET_MAGIC = b"PAR1"


def _suffix_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in PARQUET_SUFFIXES + JSONL_SUFFIXES:
        raise ValueError(
            f"data file {path} has unknown extension {suffix!r}; expected one of "
            f"{list(PARQUET_SUFFIXES + JSONL_SUFFIXES)}"
        )
    return suffix


def normalize_data_files(value: str | Sequence[str] | None, key: str) -> list[str]:
    """The configured data files as a list: verl users write one file as a plain string, others write a list.

    Args:
        value: `data.train_files` / `data.val_files` as configured: a path, a list of paths, or None / [] (none).
        key: the config key, for messages ("data.train_files").

    Returns:
        The paths, in order.

    Raises:
        ValueError: an empty string, or a list entry that is not a non-empty string; the message names the key.
    """
    if value is None:
        return []
    if isinstance(value, str | Path):
        value = [str(value)]
        if not value[0]:
            raise ValueError(f"{key}='' is empty; give a data file path or a list of them")
    files = list(value)
    for i, path in enumerate(files):
        if not isinstance(path, str | Path) or not str(path):
            raise ValueError(f"{key}[{i}]={path!r} must be a data file path (a non-empty string)")
    return [str(path) for path in files]


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read every row of a .parquet or .jsonl (.json: JSON lines, or one JSON array) file.

    Args:
        path: the data file.

    Returns:
        The rows as plain Python dicts (parquet structs become dicts, lists become lists); at least one.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a directory, an unknown extension, an empty file, a file that is not parquet / JSON (lines),
            a line that is not a JSON object, or no rows; the message names the file and what is wrong.
    """
    path = Path(path)
    if path.is_dir():
        parquet_files = sorted(p.name for p in path.glob("*.parquet"))
        hint = f" (it holds {parquet_files[:5]}{' ...' if len(parquet_files) > 5 else ''})" if parquet_files else ""
        raise ValueError(f"data file {path} is a directory, not a file: list the data files themselves{hint}")
    suffix = _suffix_of(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"data file {path} is empty (0 bytes)")
    rows = _load_parquet_rows(path) if suffix in PARQUET_SUFFIXES else _load_json_rows(path)
    if not rows:
        raise ValueError(f"data file {path} has no rows")
    return rows


def _load_parquet_rows(path: Path) -> list[dict[str, Any]]:
    # A parquet file starts and ends with the magic bytes "PAR1": a CSV or JSON file renamed .parquet has neither.
    with path.open("rb") as f:
        head = f.read(len(_PARQUET_MAGIC))
        f.seek(max(0, path.stat().st_size - len(_PARQUET_MAGIC)))
        tail = f.read()
    if head != _PARQUET_MAGIC:
        raise ValueError(
            f"data file {path} is not a parquet file (it does not start with {_PARQUET_MAGIC!r}: {head!r})"
        )
    if tail != _PARQUET_MAGIC:
        raise ValueError(f"data file {path} is a truncated or damaged parquet file (no {_PARQUET_MAGIC!r} footer)")
    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"data file {path} is not a readable parquet file: {e}") from e


def _load_json_rows(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"data file {path} is not UTF-8 text, so not JSON lines ({e.reason} at byte {e.start})") from e
    if text.lstrip().startswith("["):  # a .json file holding one array of rows
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"data file {path} is not valid JSON: {e}") from e
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ValueError(f"data file {path}: row {i} is a {type(row).__name__}, expected a JSON object")
        return rows
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"data file {path}, line {line_no}: not valid JSON: {e}") from e
        if not isinstance(row, dict):
            raise ValueError(f"data file {path}, line {line_no}: a {type(row).__name__}, expected a JSON object")
        rows.append(row)
    return rows


def write_rows(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write rows to a .parquet (via pyarrow) or .jsonl/.json (JSON lines) file, creating parent folders.

    The write goes to a temporary file first and is renamed into place, so a reader never sees half a file.

    Raises:
        ValueError: unknown extension.
    """
    path = Path(path)
    suffix = _suffix_of(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(f".{path.name}.tmp")
    try:
        if suffix in PARQUET_SUFFIXES:
            pq.write_table(_rows_to_table(rows, path), tmp_path)
        else:
            with tmp_path.open("w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp_path.replace(path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _rows_to_table(rows: list[dict[str, Any]], path: Path) -> pa.Table:
    # pa.Table.from_pylist takes its columns from the first row only; take the union, in first-seen order.
    names = list(dict.fromkeys(key for row in rows for key in row))
    columns = {}
    for name in names:
        try:
            column = pa.array([row.get(name) for row in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ValueError(f"cannot write column {name!r} to {path}: its values have mixed types ({e})") from e
        if pa.types.is_struct(column.type) and column.type.num_fields == 0:
            # Parquet cannot store a struct without fields (e.g. every extra_info == {}): store nulls.
            column = pa.nulls(len(rows))
        columns[name] = column
    return pa.table(columns)


def found_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Column names present in any row; dict-valued `reward_model` is listed by its fields (`reward_model.x`)."""
    found = set()
    for row in rows:
        for key, value in row.items():
            found.add(key)
            if key == "reward_model" and isinstance(value, dict):
                found.update(f"{key}.{sub}" for sub in value)
    return sorted(found)


def required_columns(prompt_key: str = "prompt") -> tuple[str, ...]:
    """The columns every training/validation file must have."""
    return (prompt_key, "reward_model.ground_truth", "data_source")


def check_columns(rows: list[dict[str, Any]], path: str | Path, prompt_key: str = "prompt") -> None:
    """Check that the file has every required column (in at least one row; per-row gaps are for filtering).

    Raises:
        ValueError: the file has no rows, or lacks a required column; the message names the file, the column
            and the columns found.
    """
    if not rows:
        raise ValueError(f"data file {path} has no rows")
    found = found_columns(rows)
    for column in required_columns(prompt_key):
        if column not in found:
            hint = (
                f"; data.prompt_key={prompt_key!r} names the column holding the chat messages: set it to the file's "
                "prompt column"
                if column == prompt_key
                else ""
            )
            raise ValueError(f"data file {path} is missing column {column!r} (found columns: {found}){hint}")
