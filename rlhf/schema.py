"""Typed config schemas: one docstring per field, `Literal` choices and numeric `Range`s, checked once at start-up.

The dataclasses in `rlhf/config.py` (and `rlhf/sft_config.py`) are the one home of every key, default and
constraint. OmegaConf, which Hydra composes with, cannot hold `Literal` or `Annotated` types, so Hydra is given a
plain mirror of each schema (`hydra_schema`: the same fields and defaults, Literal -> its value type, Annotated[T,
...] -> T). After composition, `build` turns the composed config into the real dataclasses, refusing keys the schema
does not have however they were written (`+actor.foo=1` included), and `check_fields` walks every field so that a
value outside its declared domain fails with the full key, the value and what is allowed.

    lr: Annotated[float, Range(gt=0)] = 1e-6
    \"\"\"Peak learning rate of the optimizer.\"\"\"
    kernel_backend: Literal["auto", "torch", "triton", "naive"] = "auto"
    \"\"\"Fused log-prob backend: ...\"\"\"
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import operator
import textwrap
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin


class ConfigError(ValueError):
    """A config value is wrong; the message names the key, the value and the fix (entry points print just that)."""


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric field: `Annotated[float, Range(gt=0)]`. `Range()` declares "any finite number"."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def violation(self, value: float) -> str | None:
        """Why `value` is outside the range (None if inside). NaN and infinities are never inside."""
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        for bound, word, holds in self._bounds():
            if bound is not None and not holds(value, bound):
                return f"must be {word} {bound:g}"
        return None

    def describe(self) -> str:
        """E.g. "> 0 and <= 1"; "any finite number" for Range()."""
        return " and ".join(f"{word} {bound:g}" for bound, word, _ in self._bounds() if bound is not None) or (
            "any finite number"
        )

    def _bounds(self) -> tuple[tuple[float | None, str, Any], ...]:
        return (
            (self.ge, ">=", operator.ge),
            (self.gt, ">", operator.gt),
            (self.le, "<=", operator.le),
            (self.lt, "<", operator.lt),
        )


@dataclass(frozen=True)
class OneOrMany:
    """Marks a `list[str]` field that also accepts a single string (`data.train_files=x.parquet`, as verl users write)."""


# ---- reading a schema --------------------------------------------------------------------------------------------


@cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved type hint of each field of dataclass `cls`, with Annotated metadata kept."""
    return typing.get_type_hints(cls, include_extras=True)


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of `cls` (and its dataclass bases); fields without one are absent."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for stmt, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """(T, True) for `T | None`, else (tp, False)."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


@dataclass(frozen=True)
class FieldType:
    """A field's type hint taken apart: the bare type and what Annotated / Optional added to it."""

    bare: Any
    range: Range | None = None
    optional: bool = False
    one_or_many: bool = False


def unwrap(tp: Any) -> FieldType:
    """Take `Annotated[T | None, Range(...), OneOrMany()]` (in any nesting order) apart."""
    extras: list[Any] = []
    optional = False
    while True:
        if get_origin(tp) is typing.Annotated:
            tp, *more = get_args(tp)
            extras.extend(more)
            continue
        tp, is_optional = _strip_optional(tp)
        if not is_optional:
            break
        optional = True
    rng = next((e for e in extras if isinstance(e, Range)), None)
    return FieldType(tp, rng, optional, any(isinstance(e, OneOrMany) for e in extras))


def literal_choices(tp: Any) -> tuple[Any, ...] | None:
    """The allowed values of a `Literal[...]` type (None for any other type)."""
    return get_args(tp) if get_origin(tp) is Literal else None


# ---- the mirror Hydra composes with ---------------------------------------------------------------------------------


def _plain_type(tp: Any) -> Any:
    """The OmegaConf-compatible version of a field type."""
    ft = unwrap(tp)
    bare = ft.bare
    if ft.one_or_many:
        return Any  # a string or a list: `build` makes it a list
    if dataclasses.is_dataclass(bare):
        plain: Any = hydra_schema(bare)
    elif (choices := literal_choices(bare)) is not None:
        plain = type(choices[0])
    elif get_origin(bare) is list:
        (item,) = get_args(bare)
        plain = list[_plain_type(item)]
    else:
        plain = bare
    return plain | None if ft.optional else plain


@cache
def hydra_schema(cls: type) -> type:
    """A dataclass with the fields and defaults of `cls` in types OmegaConf accepts (for Hydra's ConfigStore)."""
    hints = field_types(cls)
    specs = []
    for f in dataclasses.fields(cls):
        default: Any
        if f.default_factory is not dataclasses.MISSING:
            factory = f.default_factory
            default = dataclasses.field(default_factory=lambda factory=factory: _plain_default(factory()))
        else:
            default = dataclasses.field(default=f.default)
        specs.append((f.name, _plain_type(hints[f.name]), default))
    return dataclasses.make_dataclass(f"{cls.__name__}Schema", specs)


def _plain_default(value: Any) -> Any:
    """A default value as the mirror holds it: nested config objects become their mirror type."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        mirror = hydra_schema(type(value))
        return mirror(**{f.name: _plain_default(getattr(value, f.name)) for f in dataclasses.fields(value)})
    return value


# ---- from the composed config to the typed one ----------------------------------------------------------------------


def build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Instantiate dataclass `cls` from plain `data` (the composed config as containers), recursively.

    Raises:
        ConfigError: `data` has a key that `cls` does not, naming the full key and the valid keys.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]}: {cls.__name__} has no such field "
            f"(valid keys under {prefix.rstrip('.') or 'the top level'}: {sorted(names)})"
        )
    hints = field_types(cls)
    kwargs = {}
    for name, value in data.items():
        ft = unwrap(hints[name])
        if dataclasses.is_dataclass(ft.bare) and isinstance(value, dict):
            value = build(ft.bare, value, f"{prefix}{name}.")
        elif ft.one_or_many and isinstance(value, str):
            value = [value]
        kwargs[name] = value
    return cls(**kwargs)


def check_fields(obj: Any, prefix: str = "") -> None:
    """Check every field of config object `obj` (recursively) against its declared Literal choices and Range.

    Raises:
        ConfigError: `<full key>=<value> must be ...`, for the first field out of its domain.
    """
    hints = field_types(type(obj))
    for f in dataclasses.fields(obj):
        key, value = f"{prefix}{f.name}", getattr(obj, f.name)
        ft = unwrap(hints[f.name])
        bare, rng = ft.bare, ft.range
        if value is None:
            if not ft.optional:
                raise ConfigError(f"{key}=None is not allowed; set a value")
            continue
        if dataclasses.is_dataclass(bare):
            check_fields(value, f"{key}.")
            continue
        items = value if get_origin(bare) is list else [value]
        item_type = get_args(bare)[0] if get_origin(bare) is list else bare
        item = unwrap(item_type)
        rng = rng or item.range
        choices = literal_choices(item.bare)
        for element in items:
            if choices is not None and element not in choices:
                what = f"{key} has an unknown value {element!r}" if items is value else f"{key}={value!r} is not valid"
                raise ConfigError(f"{what}; choose from {list(choices)}")
            if rng is not None and (why := rng.violation(element)) is not None:
                raise ConfigError(f"{key}={value!r} {why}")


def walk_fields(cls: type, prefix: str = "") -> list[tuple[str, type, str, Any]]:
    """Every leaf field of schema `cls`: (full key, owning class, field name, type hint), depth first."""
    out = []
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        bare = unwrap(hints[f.name]).bare
        if dataclasses.is_dataclass(bare):
            out.extend(walk_fields(bare, f"{prefix}{f.name}."))
        else:
            out.append((f"{prefix}{f.name}", cls, f.name, hints[f.name]))
    return out
