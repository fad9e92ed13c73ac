"""Which reward function scores a sample: the built-in choice per data source, and user functions by spec string.

A spec names a module-level function: "package.module:function" (importable) or "/path/to/file.py:function".
Specs are how functions travel to reward worker processes: each process loads the spec itself.
"""

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rlhf.rewards.math_answer import arith_score, math_answer_score

RewardFn = Callable[..., "float | dict[str, Any]"]
"""`fn(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None) -> float | dict`"""

_BY_DATA_SOURCE: dict[str, RewardFn] = {
    "arith": arith_score,
    "calc": arith_score,  # the agent task (rlhf.data.agent_tasks): the final turn is exactly the product
    "guess_number": math_answer_score,  # the guessing game: the final turn's last number is the hidden one
    "openai/gsm8k": math_answer_score,  # ground truth "72"; responses end in "#### 72" (or a last number)
    "gsm8k": math_answer_score,
    # MATH as verl's preprocessing writes it: ground truth is the \boxed{} content, responses box their answer.
    "lighteval/MATH": math_answer_score,
    "DigitalLearningGmbH/MATH-lighteval": math_answer_score,
    "HuggingFaceH4/MATH-500": math_answer_score,
}

# Modules loaded from files by load_reward_fn: module name -> file path, so reward_fn_spec can name them again.
_FILE_MODULES: dict[str, str] = {}


def builtin_data_sources() -> list[str]:
    """The data_source values that have a built-in reward function, sorted."""
    return sorted(_BY_DATA_SOURCE)


def _unknown_sources_message(unknown: Iterable[str]) -> str:
    return (
        f"data_source {sorted(unknown)} has no built-in reward function (built-in: {builtin_data_sources()}); "
        "set reward.function to a function that scores it ('package.module:function' or "
        "'/path/to/file.py:function', signature fn(data_source, solution_str, ground_truth, extra_info=None))"
    )


def default_reward_fn(data_source: str) -> RewardFn:
    """The built-in reward function for a data source (see builtin_data_sources()).

    Raises:
        ValueError: the data source has no built-in function; the message names reward.function as the fix.
    """
    if data_source not in _BY_DATA_SOURCE:
        raise ValueError(_unknown_sources_message([data_source]))
    return _BY_DATA_SOURCE[data_source]


def check_data_sources(data_sources: Iterable[str], reward_function: str | None) -> None:
    """Check, at start-up, that every data source of the training data can be scored.

    A configured reward function scores every source; without one (reward.function unset), each source needs a
    built-in function.

    Args:
        data_sources: the `data_source` values of the train and validation rows.
        reward_function: `reward.function` (a spec), or None for the built-in functions.

    Raises:
        ValueError: reward_function is None and some sources have no built-in function; the message names them,
            the built-in ones and reward.function.
    """
    if reward_function is not None:
        return
    unknown = set(data_sources) - set(_BY_DATA_SOURCE)
    if unknown:
        raise ValueError(_unknown_sources_message(unknown))


def _split_spec(spec: str) -> tuple[str, str]:
    # rpartition: the function name never holds ":", a Windows path ("C:\\r.py:fn") may.
    location, sep, name = spec.rpartition(":")
    if not sep or not location or not name:
        raise ValueError(
            f"reward function spec {spec!r} must look like 'package.module:function' or '/path/to/file.py:function'"
        )
    return location, name


def _is_file_location(location: str) -> bool:
    return location.endswith(".py") or "/" in location or "\\" in location


def _load_file_module(spec: str, location: str) -> Any:
    path = Path(location).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"reward function spec {spec!r}: file {path} does not exist")
    # One stable module name per file: loading the same file twice reuses the module (and its globals).
    module_name = f"rlhf_reward_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    file_spec = importlib.util.spec_from_file_location(module_name, path)
    assert file_spec is not None and file_spec.loader is not None, f"no import spec for {path}"
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[module_name] = module  # before exec: dataclasses and pickling look the module up there
    try:
        file_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise ValueError(f"reward function spec {spec!r}: running {path} failed: {e!r}") from e
    _FILE_MODULES[module_name] = str(path)
    return module


def load_reward_fn(spec: str) -> RewardFn:
    """Load a user reward function from "package.module:function" or "/path/to/file.py:function".

    Raises:
        ValueError: malformed spec, missing module or file, the module fails on import, no such attribute, or
            it is not callable; the message names the spec.
    """
    location, name = _split_spec(spec)
    if _is_file_location(location):
        module = _load_file_module(spec, location)
    else:
        try:
            module = importlib.import_module(location)
        except ModuleNotFoundError as e:
            raise ValueError(f"reward function spec {spec!r}: cannot import module {location!r} ({e})") from e
        except Exception as e:
            raise ValueError(f"reward function spec {spec!r}: importing module {location!r} failed: {e!r}") from e
    fn: Any = module
    for part in name.split("."):  # "Class.method" style qualified names
        if not hasattr(fn, part):
            raise ValueError(f"reward function spec {spec!r}: {location} has no attribute {name!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ValueError(f"reward function spec {spec!r}: {name!r} is a {type(fn).__name__}, not a function")
    return fn


def reward_fn_spec(fn: RewardFn) -> str:
    """The spec string that loads `fn` again in another process (the inverse of load_reward_fn).

    Raises:
        ValueError: fn is a lambda, a nested function, or otherwise not reachable by module and name.
    """
    module_name = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module_name or not qualname or "<" in qualname:  # "<lambda>", "outer.<locals>.inner"
        raise ValueError(
            f"reward function {fn!r} cannot be loaded by a worker process: use a module-level function and pass "
            "its spec, 'package.module:function' or '/path/to/file.py:function'"
        )
    location = _FILE_MODULES.get(module_name, module_name)
    spec = f"{location}:{qualname}"
    try:
        is_same = load_reward_fn(spec) is fn
    except ValueError:
        is_same = False
    if not is_same:
        raise ValueError(
            f"reward function {fn!r} is not reachable as {spec!r}; pass its spec string instead of the function"
        )
    return spec
