"""Walking a tree of specs: dotted-path overrides, a flat listing, and plain-data round trips.

Plain data (``to_data`` / ``from_data``) is what goes into run folders and checkpoints: JSON-compatible
dicts tagged with registered spec names, so loading a checkpoint never unpickles anything and can only
construct spec classes the zoo knows.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

from zoo.errors import RecipeError, UnknownNameError, close_matches
from zoo.recipe.spec import SPECS, check_value, field_hints, is_spec

__all__ = ["parse_override", "apply_overrides", "flatten", "to_data", "from_data"]

_TYPE_KEY = "_spec"
_ALBU_KEY = "_albumentations"


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=0.01"`` → ``("optim.lr", 0.01)``. Values are Python literals; anything else is a string."""
    path, sep, raw = text.partition("=")
    if not sep or not path.strip():
        raise RecipeError("", f"override {text!r} is not of the form dotted.path=value")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()
    if isinstance(value, list):
        value = tuple(value)
    return path.strip(), value


class _Changes(dict):
    """Overrides below one node, keyed by field name (leaf values, or ``_Changes`` of a child node)."""


def _apply_mapping(node: dict, changes: _Changes, done: str) -> dict:
    """Overrides below a ``dict`` field (``model.heads``, ``loss.weights``): its keys are the path parts."""
    updated = dict(node)
    for key, value in changes.items():
        path = f"{done}.{key}"
        if key not in node:
            hint = close_matches(key, list(node))
            did = f"; did you mean {', '.join(hint)}?" if hint else ""
            raise RecipeError(path, f"unknown key{did} (keys: {', '.join(map(str, node))})")
        if isinstance(value, _Changes):
            updated[key] = _apply(node[key], value, path)
        elif is_spec(node[key]):
            raise RecipeError(path, f"is a {type(node[key]).__name__}; set its fields ({path}.FIELD=value)")
        else:
            updated[key] = value
    return updated


def _apply(node: Any, changes: _Changes, done: str) -> Any:
    if isinstance(node, dict):
        return _apply_mapping(node, changes, done)
    if not is_spec(node):
        raise RecipeError(done, f"is a {type(node).__name__}, which has no field {next(iter(changes))!r}")
    names = [f.name for f in dataclasses.fields(node)]
    hints = field_hints(type(node))
    updates = {}
    for name, value in changes.items():
        path = f"{done}.{name}" if done else name
        if name not in names:
            hint = close_matches(name, names)
            did = f"; did you mean {', '.join(hint)}?" if hint else ""
            raise RecipeError(path, f"unknown field of {type(node).__name__}{did} (fields: {', '.join(names)})")
        if isinstance(value, _Changes):
            updates[name] = _apply(getattr(node, name), value, path)
            if isinstance(updates[name], dict):  # a mapping's new values are checked against the field's hint
                updates[name] = check_value(updates[name], hints[name], path)
            continue
        try:
            updates[name] = check_value(value, hints[name], path)
        except RecipeError:
            # 'data.root=2024' names the folder 2024 when the field takes a string
            if isinstance(value, str) or not _accepts_str(hints[name]):
                raise
            updates[name] = check_value(str(value), hints[name], path)
    try:  # all fields of a node change at once: data.channels=1 data.mean=[0.5] is consistent
        return dataclasses.replace(node, **updates)
    except UnknownNameError as e:  # a registry lookup while the node validates itself
        raise RecipeError(f"{done}.{next(iter(updates))}" if done else "", str(e)) from None
    except RecipeError as e:
        if not done or "." in e.path:
            raise
        # a node's own agreement check names its field alone ("dim"): say where the node sits
        raise RecipeError(f"{done}.{e.path}" if e.path else done, str(e).removeprefix(f"{e.path}: ")) from None


def _accepts_str(hint: Any) -> bool:
    try:
        check_value("x", hint, "")
        return True
    except RecipeError:
        return False


def apply_overrides(root: Any, overrides: dict[str, Any] | list[str]) -> Any:
    """A copy of the spec tree ``root`` with each ``dotted.path`` set to its value, type-checked."""
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    tree = _Changes()
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = tree
        for i, part in enumerate(parents):
            node = node.setdefault(part, _Changes())
            if not isinstance(node, _Changes):
                raise RecipeError(".".join(parents[: i + 1]), f"is set to a value and also has {path} set")
        node[leaf] = value
    return _apply(root, tree, "") if tree else root


def flatten(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every leaf field as ``(dotted.path, value)``, spec nodes as ``(path, "<ClassName>")``; a ``dict`` of specs
    (``model.heads``) is walked like a spec, its keys as path parts."""
    rows: list[tuple[str, Any]] = []
    items = node.items() if isinstance(node, dict) else ((f.name, getattr(node, f.name)) for f in dataclasses.fields(node))
    for name, value in items:
        path = f"{prefix}{name}"
        if is_spec(value):
            rows.append((path, f"<{type(value).__name__}>"))
            rows += flatten(value, path + ".")
        elif isinstance(value, dict) and any(is_spec(v) for v in value.values()):
            rows.append((path, f"<{len(value)} named>"))
            rows += flatten(value, path + ".")
        else:
            rows.append((path, value))
    return rows


def _is_albumentations(value: Any) -> bool:
    return isinstance(value, tuple) and value and type(value[0]).__module__.startswith("albumentations")


def to_data(value: Any) -> Any:
    """A spec tree as JSON-compatible data."""
    if is_spec(value):
        data = {_TYPE_KEY: type(value).spec_name}
        data.update({f.name: to_data(getattr(value, f.name)) for f in dataclasses.fields(value)})
        return data
    if _is_albumentations(value):
        import albumentations as A

        return {_ALBU_KEY: A.to_dict(A.Compose(list(value)))}
    if isinstance(value, tuple):
        return [to_data(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_data(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def from_data(data: Any, path: str = "recipe") -> Any:
    """Rebuilds what :func:`to_data` wrote; only registered spec classes can be named."""
    if isinstance(data, dict) and _TYPE_KEY in data:
        cls = SPECS.get(data[_TYPE_KEY])
        kwargs = {k: from_data(v, f"{path}.{k}") for k, v in data.items() if k != _TYPE_KEY}
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := set(kwargs) - known:
            raise RecipeError(path, f"saved {cls.__name__} has fields this version lacks: {sorted(unknown)}")
        return cls(**kwargs)
    if isinstance(data, dict) and _ALBU_KEY in data:
        import albumentations as A

        return tuple(A.from_dict(data[_ALBU_KEY]).transforms)
    if isinstance(data, list):
        return tuple(from_data(v, path) for v in data)
    if isinstance(data, dict):
        return {k: from_data(v, f"{path}.{k}") for k, v in data.items()}
    return data
