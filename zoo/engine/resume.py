"""Run folders that survive interruption: refusing to mix two runs, starting clean, and resuming exactly.

``zoo train RECIPE --out DIR`` refuses a folder that already holds a run; ``--overwrite`` removes what the previous
run wrote and starts clean; ``--resume`` continues it from ``DIR/last.ckpt`` with the recipe stored there. Lightning
restores the weights, optimizer, schedule, epoch and the callbacks' state (best checkpoint, early stopping);
:class:`RngStates` adds the random number generators, and ``zoo.engine.datamodule.SeededOrder`` makes the data order
and augmentation a function of ``(seed, epoch, index)`` — so a run killed after epoch k and resumed ends with the
same weights as the uninterrupted run (bit for bit with ``trainer.deterministic=True`` on a CPU).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from zoo.errors import ZooError
from zoo.recipe import Recipe
from zoo.recipe.tree import flatten

__all__ = ["RngStates", "RUN_FILES", "existing_run", "clear_run", "resume_recipe"]

# What a run writes at the top of its folder (head pictures also go into subfolders named after the heads).
RUN_FILES = ("best.ckpt", "last.ckpt", "metrics.json", "recipe.json", "recipe.txt", "data.json", "logs", "mlruns")
# Recipe fields a resumed run may change: where and how fast it runs, and how long (never shapes or the data).
RESUMABLE = ("trainer.max_epochs", "trainer.max_time", "trainer.accelerator", "trainer.devices", "trainer.strategy",
             "trainer.num_nodes", "trainer.progress_bar",
             "trainer.log_every_n_steps", "trainer.compile", "trainer.channels_last", "trainer.loggers",
             "trainer.checkpoint_every_n_steps", "data.num_workers")


class RngStates(L.Callback):
    """Saves Python's, NumPy's and torch's (CPU and CUDA) random states in every checkpoint and restores them on
    resume, so dropout and anything else drawing from the global generators continues where it stopped."""

    def state_dict(self) -> dict[str, Any]:
        state = {"python": list(random.getstate()[1]), "python_version": random.getstate()[0],
                 "python_gauss": random.getstate()[2], "numpy": np.random.get_state()[1].tolist(),
                 "numpy_pos": int(np.random.get_state()[2]), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
        np.random.set_state(("MT19937", np.asarray(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def existing_run(out: Path) -> list[str]:
    """The run files already in ``out`` (empty: no run there)."""
    return [name for name in RUN_FILES if (out / name).exists()] if out.is_dir() else []


def clear_run(out: Path) -> None:
    """Removes what a run wrote into ``out`` (its files, logs, pictures and head folders); other files stay."""
    heads = []
    if (out / "recipe.json").is_file():
        import json

        heads = list((json.loads((out / "recipe.json").read_text()).get("model", {}).get("heads") or {}))
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for picture in out.glob("*.png"):
        picture.unlink()
    for name in heads:
        if (out / name).is_dir():
            shutil.rmtree(out / name)


def resume_recipe(out: Path, given: Recipe) -> Recipe:
    """The recipe stored in ``out``'s last checkpoint, with the fields of ``given`` that a resumed run may change.

    Raises:
        ZooError: no ``last.ckpt``, or ``given`` changes a field that is not in :data:`RESUMABLE` (it would change
            shapes, data or the optimisation: start a new run instead), or lowers ``trainer.max_epochs``.
    """
    from zoo.engine.checkpoint import migrate_checkpoint, read_checkpoint
    from zoo.engine.module import CHECKPOINT_KEY

    last = out / "last.ckpt"
    if not last.is_file():
        raise ZooError(f"--resume: {out} has no last.ckpt to continue from (found {existing_run(out) or 'nothing'})")
    data = read_checkpoint(last)
    stored = Recipe.from_data(migrate_checkpoint(data[CHECKPOINT_KEY], last)["recipe"])
    # both sides through the same plain-data round trip, so values compare alike (albumentations transforms)
    old, new = dict(flatten(stored)), dict(flatten(Recipe.from_data(given.to_data())))
    changed = sorted(k for k in set(old) | set(new) if str(old.get(k)) != str(new.get(k)))
    refused = [k for k in changed if k not in RESUMABLE]
    if refused:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in refused[:5])
        raise ZooError(f"--resume: the recipe differs from the one {out} was trained with ({shown}); a resumed run may "
                       f"only change {', '.join(RESUMABLE)}. Start a new run (another --out, or --overwrite)")
    if given.trainer.max_epochs < data.get("epoch", 0) + 1:
        raise ZooError(f"--resume: trainer.max_epochs={given.trainer.max_epochs} but {last} ended epoch "
                       f"{data['epoch'] + 1}; raise it to train further")
    return stored.override(**{k: dict(flatten(given))[k] for k in changed})
