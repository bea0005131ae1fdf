"""zoo: a multi-task vision model zoo. ``zoo.load(checkpoint).predict(images)`` is the Python inference API
(:mod:`zoo.inference`); it is imported on first use, so ``import zoo`` stays light."""

from __future__ import annotations

from typing import Any

__all__ = ["load"]


def load(checkpoint: Any, **kwargs: Any) -> Any:
    """A trained checkpoint ready to predict: see :func:`zoo.inference.load` (``device="auto"``, ``batch_size=32``,
    ``overrides=None``)."""
    from zoo.inference import load as _load

    return _load(checkpoint, **kwargs)
