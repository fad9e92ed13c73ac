"""Plugins load by spec ("module:name" or "/path/file.py:name") and errors name the config key."""

from pathlib import Path

import pytest

from rlhf.plugins import callable_spec, load_callable

FNS = str(Path(__file__).parents[1] / "agent" / "tool_fns.py")


def test_load_by_module_and_by_path() -> None:
    assert load_callable("rlhf.agent.builtin_tools:calculator", "k")("1+1") == "2"
    add = load_callable(f"{FNS}:add", "k")
    assert add(2, 3) == 5
    assert load_callable(f"{FNS}:add", "k") is add  # one module per file, loaded once


def test_callable_spec_is_the_inverse() -> None:
    add = load_callable(f"{FNS}:add", "k")
    assert callable_spec(add) == f"{FNS}:add"
    assert callable_spec(load_callable("rlhf.agent.builtin_tools:calculator", "k")) == (
        "rlhf.agent.builtin_tools:calculator"
    )
    assert callable_spec(lambda x: x) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nocolon", "agent.env='nocolon' must look like"),
        ("no_such_module_xyz:fn", "agent.env='no_such_module_xyz:fn': cannot import module 'no_such_module_xyz'"),
        ("/tmp/definitely_missing_plugin.py:fn", "file /tmp/definitely_missing_plugin.py does not exist"),
        ("rlhf.plugins:nothing_here", "rlhf.plugins has no attribute 'nothing_here'"),
        ("rlhf.plugins:_FILE_MODULES", "names a dict, not a function"),
    ],
)
def test_errors_name_key_and_spec(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_callable(spec, "agent.env")
