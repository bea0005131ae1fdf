"""The errors the zoo raises at its users.

Every error names what was wrong (a file, a dotted recipe path, a registry name), the bad value, and
what would be valid, so that the message alone is enough to fix the input.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["ZooError", "RecipeError", "UnknownNameError", "CheckpointError", "close_matches"]


class ZooError(Exception):
    """Base class of every error the zoo raises on bad user input."""


class RecipeError(ZooError, ValueError):
    """A recipe field has a bad value; the message starts with its dotted path."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class UnknownNameError(ZooError, KeyError):
    """A name is not in a registry; the message lists the closest registered names."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind, self.name = kind, name
        known = list(known)
        self.suggestions = close_matches(name, known)
        if self.suggestions:
            hint = f"; did you mean {', '.join(map(repr, self.suggestions))}?"
        elif len(known) <= 12:  # a short list (sources, schedule names) is shown whole
            hint = f"; valid: {', '.join(map(repr, sorted(known)))}"
        else:
            hint = ""
        super().__init__(f"unknown {kind} {name!r}{hint}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


class CheckpointError(ZooError):
    """A checkpoint or weights file cannot be used; the message names the file."""


def close_matches(name: str, known: Iterable[str], n: int = 5) -> list[str]:
    """Names in ``known`` that look like ``name``, best first (case-insensitive)."""
    known = list(known)
    lowered = {k.lower(): k for k in known}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    if len(hits) < n:  # substring matches catch 'resnet' -> 'resnet18' that difflib ranks low
        hits += [k for k in lowered if name.lower() in k and k not in hits][: n - len(hits)]
    return [lowered[h] for h in hits]
