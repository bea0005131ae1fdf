"""Checkpoint writing (atomic: temp file + rename) and loading (weights only: no code runs)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from zoo.errors import CheckpointError, ZooError
from zoo.weights import read_weights_file

__all__ = ["AtomicCheckpointIO", "atomic_torch_save", "read_checkpoint", "migrate_checkpoint"]


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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files: give the checkpoint the run files' permissions
        os.replace(tmp, path)
    except RuntimeError as e:  # torch's zip writer reports a failed write (a full disk) as "enforce fail ..."
        Path(tmp).unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        raise ZooError(f"could not write checkpoint {path}: {'no space left on device' if free < 2**26 else e} "
                       f"({free / 2**20:.0f} MiB free in {path.parent})") from None
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



# Spec fields renamed since a format was written: (spec name, old field) -> new field.
_RENAMED_FIELDS = {("YoloV1", "feature_level"): "level"}


def _rename_fields(data: Any) -> Any:
    if isinstance(data, dict):
        kind = data.get("_spec")
        return {_RENAMED_FIELDS.get((kind, k), k): _rename_fields(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_rename_fields(v) for v in data]
    return data


def migrate_checkpoint(saved: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's ``zoo`` entry in the current format (``zoo.engine.module.CHECKPOINT_FORMAT``).

    Format 1 (one head; ``classes`` a list of the head's target classes) becomes format 2 (``classes`` per target
    key); renamed spec fields are renamed. A format newer than this version is refused with what to do.
    """
    from zoo.engine.module import CHECKPOINT_FORMAT

    version = saved.get("format", 1)
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {version!r} is newer than this zoo reads "
                              f"(up to {CHECKPOINT_FORMAT}); upgrade the zoo package")
    if version == CHECKPOINT_FORMAT:
        return saved
    recipe = _rename_fields(saved["recipe"])
    head = recipe.get("model", {}).get("head") or {}
    import heads  # noqa: F401  (registers the head specs a saved recipe names)
    from zoo.recipe.spec import SPECS

    try:
        target = SPECS.get(head["_spec"]).task.target
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: format-1 checkpoint without a readable model.head ({e}); retrain it") from None
    return {**saved, "recipe": recipe, "classes": {target: list(saved["classes"])}, "format": CHECKPOINT_FORMAT}
