"""Checkpoint writing (atomic: temp file + rename) and loading (weights only: no code runs)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from zoo.errors import CheckpointError
from zoo.weights import read_weights_file

__all__ = ["AtomicCheckpointIO", "atomic_torch_save", "read_checkpoint"]


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temp file beside ``path``, then rename it into place.

    A crash mid-write leaves the previous file intact and no partial file under ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO whose saves are atomic (Lightning's own writes the file in place)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A zoo checkpoint as plain data, loaded with ``weights_only=True``.

    Raises:
        CheckpointError: missing file, pickled objects (refused, nothing executed), or not a zoo checkpoint.
    """
    from zoo.engine.module import CHECKPOINT_KEY

    data = read_weights_file(path)
    if not isinstance(data, dict) or CHECKPOINT_KEY not in data or "state_dict" not in data:
        raise CheckpointError(f"{path}: not a zoo checkpoint (no recipe inside); train one with `zoo train`")
    return data

