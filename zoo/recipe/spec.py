"""Specs: frozen, keyword-only, typed dataclasses that describe a part of a recipe.

``@spec`` turns a class into such a dataclass, registers it by name (a second class with the same name
raises), and makes construction check every field against its type hint and its ``Range``::

    @spec
    class Optim:
        lr: Annotated[float, Range(gt=0)] = 1e-3  # learning rate

A field may be ``None`` only if its hint says so; a ``float`` field refuses ``inf`` and ``nan``. Fields that hold other specs are type-checked with
``isinstance``. Registration is what lets a recipe saved inside a checkpoint be rebuilt from plain data,
without pickling: only registered spec classes can be named there.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from zoo.errors import RecipeError
from zoo.registry import Registry

__all__ = ["spec", "Range", "SPECS", "check_value", "field_hints", "is_spec"]

SPECS: Registry[type] = Registry("spec")


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric field; ``None`` leaves a side open."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def check(self, value: float) -> str | None:
        for bound, ok, word in ((self.ge, lambda b: value >= b, ">="), (self.gt, lambda b: value > b, ">"),
                                (self.le, lambda b: value <= b, "<="), (self.lt, lambda b: value < b, "<")):
            if bound is not None and not ok(bound):
                return f"must be {word} {bound}, got {value!r}"
        return None


def is_spec(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type) and getattr(type(obj), "spec_name", None) in SPECS


def field_hints(cls: type) -> dict[str, Any]:
    """Resolved type hints of a spec class's fields, ``Annotated`` extras kept."""
    return typing.get_type_hints(cls, include_extras=True)


def _describe(tp: Any) -> str:
    if get_origin(tp) is Annotated:
        return _describe(get_args(tp)[0])
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) in (Union, types.UnionType):
        return " | ".join(_describe(a) for a in get_args(tp))
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "None")


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` as an instance of ``tp`` (ints widen to float, lists to tuples), or raises ``_Mismatch``."""
    origin = get_origin(tp)
    if tp is Any or tp is object:
        return value
    if origin is Annotated:
        inner, *extras = get_args(tp)
        value = _coerce(value, inner)
        for extra in extras:
            if isinstance(extra, Range) and value is not None and (msg := extra.check(value)):
                raise _Mismatch(msg)
        return value
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise _Mismatch(f"must be one of {_describe(tp)}, got {value!r}")
    if origin in (Union, types.UnionType):
        errors = []
        for arm in get_args(tp):
            try:
                return _coerce(value, arm)
            except _Mismatch as e:
                errors.append(str(e))
        ranged = [e for e in errors if e.startswith("must be") and "got" in e and "expected" not in e]
        raise _Mismatch(ranged[0] if ranged else f"expected {_describe(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # 1e999 parses as inf, which every Range(gt=...) would pass
                raise _Mismatch(f"must be a finite number, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
    elif origin is dict:
        if isinstance(value, dict):
            key_type, value_type = get_args(tp) or (Any, Any)
            return {_coerce(k, key_type): _coerce(v, value_type) for k, v in value.items()}
    elif origin is tuple:
        if isinstance(value, (tuple, list)):
            args = get_args(tp)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(v, args[0]) for v in value)
            if len(args) == len(value):
                return tuple(_coerce(v, a) for v, a in zip(value, args))
    elif isinstance(tp, type):
        if isinstance(value, tp):
            return value
    else:
        return value  # hints this module does not understand are not checked
    raise _Mismatch(f"expected {_describe(tp)}, got {value!r} ({type(value).__name__})")


def check_value(value: Any, tp: Any, path: str) -> Any:
    """Checks ``value`` against the hint ``tp``; returns it coerced, or raises ``RecipeError`` at ``path``."""
    try:
        return _coerce(value, tp)
    except _Mismatch as e:
        raise RecipeError(path, str(e)) from None


def spec(cls: type | None = None, *, name: str | None = None) -> Any:
    """Makes ``cls`` a frozen keyword-only dataclass that validates its fields, and registers it.

    ``name`` is the stable name saved recipes and checkpoints use (default: the class name). A class renamed
    later keeps loading old checkpoints with ``@spec(name="OldName")``.
    """
    if cls is None:
        return lambda c: spec(c, name=name)
    user_post_init = getattr(cls, "__post_init__", None)

    def __post_init__(self) -> None:
        hints = field_hints(type(self))
        for f in dataclasses.fields(self):
            value = check_value(getattr(self, f.name), hints[f.name], f"{type(self).__name__}.{f.name}")
            object.__setattr__(self, f.name, value)
        if user_post_init is not None:
            user_post_init(self)

    cls.__post_init__ = __post_init__
    cls = dataclass(frozen=True, kw_only=True)(cls)
    cls.spec_name = name or cls.__name__
    SPECS.register(cls.spec_name, cls)
    return cls
