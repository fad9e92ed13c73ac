"""Loading user plugins (reward functions, tools, environments, parsers) by spec string, and the inverse.

A spec names a module-level attribute: "package.module:name" (importable) or "/path/to/file.py:name". Specs are
how plugins travel to worker processes: each process loads the spec itself, so a function defined in a file that
is not on the import path still reaches a worker.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Modules loaded from files: module name -> file path, so callable_spec can name them again.
_FILE_MODULES: dict[str, str] = {}


def split_spec(spec: str, key: str) -> tuple[str, str]:
    """("package.module" or "/path/file.py", "name") from a spec.

    Raises:
        ValueError: the spec has no ":" or an empty side; the message names `key`.
    """
    # rpartition: the attribute name never holds ":", a Windows path ("C:\\r.py:fn") may.
    location, sep, name = spec.rpartition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or not location or not name:
        raise ValueError(f"{key}={spec!r} must look like 'package.module:function' or '/path/to/file.py:function'")
    return location, name


def is_file_location(location: str) -> bool:
    return location.endswith(".py") or "/" in location or "\\" in location


def _load_file_module(spec: str, location: str, key: str) -> Any:
    path = Path(location).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"{key}={spec!r}: file {path} does not exist")
    # One stable module name per file: loading the same file twice reuses the module (and its globals).
    module_name = f"rlhf_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
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
        raise ValueError(f"{key}={spec!r}: running {path} failed: {e!r}") from e
    _FILE_MODULES[module_name] = str(path)
    return module


def load_object(spec: str, key: str) -> Any:
    """The module-level object named by "package.module:name" or "/path/to/file.py:name" ("Class.attr" allowed).

    Raises:
        ValueError: malformed spec, missing module or file, the module fails on import, or no such attribute;
            the message names `key` and the spec.
    """
    location, name = split_spec(spec, key)
    if is_file_location(location):
        module = _load_file_module(spec, location, key)
    else:
        try:
            module = importlib.import_module(location)
        except ModuleNotFoundError as e:
            raise ValueError(f"{key}={spec!r}: cannot import module {location!r} ({e})") from e
        except Exception as e:
            raise ValueError(f"{key}={spec!r}: importing module {location!r} failed: {e!r}") from e
    obj: Any = module
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{key}={spec!r}: {location} has no attribute {name!r}")
        obj = getattr(obj, part)
    return obj


def load_callable(spec: str, key: str) -> Callable[..., Any]:
    """Load a user function (or class) from "package.module:function" or "/path/to/file.py:function".

    Args:
        spec: where the callable lives.
        key: the config key the spec came from, named in every error (e.g. "agent.tools[0]").

    Returns:
        The callable itself.

    Raises:
        ValueError: malformed spec, missing module or file, the module fails on import, no such attribute, or it
            is not callable; the message names `key` and the spec.
    """
    obj = load_object(spec, key)
    if not callable(obj):
        raise ValueError(f"{key}={spec!r} names a {type(obj).__name__}, not a function")
    return obj


def callable_spec(fn: Callable[..., Any]) -> str | None:
    """The spec that loads `fn` again in another process (the inverse of load_callable), or None if there is none.

    None for lambdas, nested functions, partials and anything not reachable by module and qualified name.
    """
    module_name = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module_name or not qualname or "<" in qualname or module_name == "__main__":
        return None
    spec = f"{_FILE_MODULES.get(module_name, module_name)}:{qualname}"
    try:
        is_same = load_object(spec, "spec") is fn
    except ValueError:
        is_same = False
    return spec if is_same else None
