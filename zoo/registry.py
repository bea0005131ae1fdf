"""A name → builder registry: duplicate names raise, unknown names list close matches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from zoo.errors import UnknownNameError, ZooError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (usually builders) of one kind.

    Args:
        kind: what the entries are, used in error messages ("backbone", "spec").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T) -> T:
        if name in self._entries:
            raise ZooError(f"{self.kind} {name!r} is registered twice: {self._entries[name]!r} and {obj!r}")
        self._entries[name] = obj
        return obj

    def decorator(self, name: str | None = None) -> Callable[[T], T]:
        """``@registry.decorator()`` registers a function or class under its ``__name__``."""

        def wrap(obj: T) -> T:
            return self.register(name or obj.__name__, obj)

        return wrap

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._entries) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)
