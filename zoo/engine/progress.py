"""What a training run shows while it runs: a progress bar (terminal or notebook) or one line per epoch, and the
training curves redrawn after every epoch (``curves.png``), so an interrupted run still has them."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger

from zoo.curves import write_curves
from zoo.recipe.parts import ModelSpec

__all__ = ["EpochLine", "CurvesEveryEpoch", "in_notebook", "show_progress_bar", "progress_callbacks"]

log = logging.getLogger(__name__)


def in_notebook() -> bool:
    """Whether this process is a Jupyter (IPython kernel) session, where stderr is no TTY but a bar still renders."""
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except Exception:  # noqa: BLE001  (an IPython without a running shell)
        return False


def show_progress_bar(setting: str) -> bool:
    """``trainer.progress_bar``: "bar" always, "lines" never (one line per epoch), "auto" when stderr is a terminal or
    the process is a notebook kernel (the ``ZOO_PROGRESS`` environment variable, "bar" or "lines", overrides
    "auto", e.g. for CI logs)."""
    if setting == "auto":
        setting = os.environ.get("ZOO_PROGRESS", "auto")
    if setting == "auto":
        return sys.stderr.isatty() or in_notebook()
    return setting == "bar"


class EpochLine(L.Callback):
    """One line per epoch, for logs that are not a terminal (where a progress bar would flood): the losses, the
    monitored metric and the few metrics each head's task chooses (``Task.shown``); the rest stays in the logs.

    Printed at the end of the training epoch, which Lightning reaches after that epoch's validation and after the
    module has logged its metrics (a callback's ``on_validation_epoch_end`` runs before the module's, so it would
    show the previous epoch's numbers).
    """

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        wanted = ["train/loss", "val/loss", f"val/{module.monitor}"]
        for name, ctx in module.contexts.items():
            task = type(ctx.spec).task
            wanted += [f"val/{ModelSpec.prefix(name)}{m}" for m in (task.monitor, *task.shown)]
        wanted.append("train/data_wait")  # the loader's share of the step time, where the engine measures it
        metrics = trainer.callback_metrics
        shown = {k: float(metrics[k]) for k in dict.fromkeys(wanted) if k in metrics}
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  "
              + "  ".join(f"{k}={v:.4f}" for k, v in shown.items()), flush=True)


class CurvesEveryEpoch(L.Callback):
    """Redraws ``curves.png`` (and ``curves_<head>.png``) in the run folder after every epoch, from the CSV log
    (flushed first), on the main process only. A failure to draw is logged, never stops training."""

    def __init__(self, out: Any) -> None:
        self.out = out

    def _draw(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        csv = [lg for lg in trainer.loggers if isinstance(lg, CSVLogger)]
        if not csv:
            return
        try:
            csv[0].save()
            write_curves(self.out)
        except Exception as e:  # noqa: BLE001  (pictures are a convenience; the run goes on)
            log.warning("could not draw the training curves in %s: %s", self.out, e)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._draw(trainer)

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._draw(trainer)


def progress_callbacks(setting: str, out: Any, refresh_rate: int) -> list[L.Callback]:
    """The bar (Lightning's tqdm bar, which renders as a widget in notebooks) or the epoch lines, and the curves
    when there is a run folder. Evaluation without a run folder gets neither."""
    callbacks: list[L.Callback] = []
    if show_progress_bar(setting):  # redraw as often as the loss is logged, not every step
        callbacks.append(TQDMProgressBar(refresh_rate=refresh_rate))
    elif out is not None:
        callbacks.append(EpochLine())
    if out is not None:
        callbacks.append(CurvesEveryEpoch(out))
    return callbacks


def recipe_hparams(recipe: Any) -> dict[str, Any]:
    """The recipe as flat hyperparameters for the loggers: every field by its dotted path (``optim.lr``), numbers,
    booleans and strings as they are, other values as their ``repr``, plus the monitored metric."""
    from zoo.recipe.tree import flatten

    params = {path: value if isinstance(value, (int, float, bool, str)) else repr(value)
              for path, value in flatten(recipe)}
    name, mode = recipe.monitor()
    params["monitor"] = f"val/{name} ({mode})"
    return params


def log_evaluation(loggers: list, recipe: Any, metrics: dict[str, float], out: Any, step: int) -> None:
    """After the test pass: the test metrics (``test/<name>``) to every logger, and to TensorBoard also the recipe as
    hyperparameters with those metrics (its HPARAMS tab) and the evaluation pictures (prediction grid, worst
    examples) as images."""
    from pathlib import Path

    import numpy as np
    from lightning.pytorch.loggers import TensorBoardLogger
    from PIL import Image

    test = {f"test/{k}": float(v) for k, v in metrics.items()}
    for lg in loggers:
        if isinstance(lg, TensorBoardLogger):
            lg.log_hyperparams(recipe_hparams(recipe), metrics=test)  # also logs the metrics themselves
            for path in sorted(Path(out).rglob("*.png")):
                if path.name.startswith(("predictions_", "worst_")):
                    tag = "test/" + str(path.relative_to(out).with_suffix(""))
                    lg.experiment.add_image(tag, np.asarray(Image.open(path).convert("RGB")), step,
                                            dataformats="HWC")
        else:
            lg.log_metrics(test, step=step)
        lg.save()
        lg.finalize("success")
