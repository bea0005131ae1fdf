"""zoo: a multi-task vision model zoo. ``zoo.load(checkpoint).predict(images)`` is the Python inference API
(:mod:`zoo.inference`); it is imported on first use, so ``import zoo`` stays light."""

from __future__ import annotations

from typing import Any

__all__ = ["load", "version"]


def version() -> str:
    """The installed zoo package's version (what `zoo --version` prints and exported files record)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _installed

    try:
        return _installed("zoo")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def load(checkpoint: Any, **kwargs: Any) -> Any:
    """A trained checkpoint ready to predict: see :func:`zoo.inference.load` (``device="auto"``, ``batch_size=32``,
    ``overrides=None``)."""
    from zoo.inference import load as _load

    return _load(checkpoint, **kwargs)
