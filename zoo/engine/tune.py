"""``zoo tune``: Lightning's Tuner on a recipe — the learning-rate range test and the largest batch that fits.

Both run the recipe's own module and data (the model is put back as it was after the search; nothing is trained for
real) and write nothing into run folders: the learning-rate plot and its numbers go to their own folder.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.tuner import Tuner

from zoo.engine.datamodule import ZooDataModule
from zoo.engine.module import ZooModule
from zoo.engine.run import _quiet_lightning, _trainer, check_model, prepare_data
from zoo.errors import ZooError
from zoo.recipe import Recipe

__all__ = ["find_lr", "find_batch_size"]


def _setup(recipe: Recipe, out: Path) -> tuple[L.Trainer, ZooModule, ZooDataModule]:
    _quiet_lightning()
    # the Tuner reloads its own temporary checkpoint (written here, so weights_only=False is safe): no notice
    logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector").setLevel(logging.WARNING)
    check_model(recipe)
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    splits = prepare_data(recipe)
    module, datamodule = ZooModule(recipe, splits.classes), ZooDataModule(recipe, splits)
    out.mkdir(parents=True, exist_ok=True)
    # the search's temporary checkpoint goes to `out`; a single device (the Tuner does not search across ranks)
    trainer = _trainer(recipe, out, [], enable_progress_bar=False, devices=1, num_nodes=1, strategy="auto",
                       limit_val_batches=0, enable_checkpointing=False)
    return trainer, module, datamodule


def find_lr(recipe: Recipe, out: str | Path, *, min_lr: float = 1e-6, max_lr: float = 1.0,
            steps: int = 100) -> dict[str, Any]:
    """The learning-rate range test (Smith 2017; Lightning's ``Tuner.lr_find``): ``steps`` training steps with the
    learning rate rising exponentially from ``min_lr`` to ``max_lr`` (every parameter group at the same rate),
    stopped early when the loss diverges. The suggestion is the rate of steepest loss descent — a value for
    ``optim.lr``. Writes ``out/lr_find.png`` (loss against learning rate, the suggestion marked) and
    ``out/lr_find.json`` (the curve and the suggestion).
    """
    if not 0 < min_lr < max_lr:
        raise ZooError(f"--min-lr {min_lr} and --max-lr {max_lr}: need 0 < min-lr < max-lr")
    out = Path(out)
    trainer, module, datamodule = _setup(recipe, out)
    finder = Tuner(trainer).lr_find(module, datamodule=datamodule, min_lr=min_lr, max_lr=max_lr,
                                    num_training=steps, update_attr=False)
    if finder is None:
        raise ZooError("the learning-rate finder returned no result")
    # Lightning's smoothed loss (an exponential average, beta 0.98) is bias-corrected with the step count read after
    # the optimizer step, one power too many: the first points come out up to 2x too low, a dip that is not in the
    # data. Undo that factor, so the curve and the suggestion (steepest descent) see the true average.
    beta = 0.98
    finder.results["loss"] = [loss * (1 - beta ** (k + 2)) / (1 - beta ** (k + 1))
                              for k, loss in enumerate(finder.results["loss"])]
    lrs, losses = finder.results["lr"], finder.results["loss"]
    suggestion = finder.suggestion() if len(lrs) > 11 else None  # it skips the first 10 points
    figure = finder.plot(suggest=suggestion is not None)
    figure.axes[0].set_title(f"{recipe.name}: learning-rate range test"
                             + (f" (suggested optim.lr={suggestion:.2e})" if suggestion else ""))
    figure.savefig(out / "lr_find.png", dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    result = {"suggestion": suggestion, "recipe_lr": recipe.optim.lr, "steps": len(lrs),
              "lr": [float(v) for v in lrs], "loss": [float(v) if math.isfinite(v) else None for v in losses]}
    (out / "lr_find.json").write_text(json.dumps(result, indent=1))
    return result


def find_batch_size(recipe: Recipe, out: str | Path, *, max_trials: int = 12) -> int:
    """The largest ``data.batch_size`` whose training step fits in GPU memory (Lightning's
    ``Tuner.scale_batch_size``, doubling from the recipe's batch size until memory runs out). GPU only: on a CPU
    the limit is speed, not memory, and doubling until the machine swaps helps no one."""
    if not torch.cuda.is_available() or recipe.trainer.accelerator == "cpu":
        raise ZooError("zoo tune batch finds the largest batch that fits in GPU memory, and this run has no CUDA GPU "
                       "(on a CPU memory is rarely the limit: choose data.batch_size for speed, e.g. 32-128)")
    trainer, module, datamodule = _setup(recipe, Path(out))
    found = Tuner(trainer).scale_batch_size(module, datamodule=datamodule, mode="power", max_trials=max_trials,
                                            init_val=recipe.data.batch_size)
    return int(found)
