"""Training curves of several runs on one picture: training loss (left) and validation error (right) per epoch.

Reads each run folder's ``logs/metrics.csv`` (Lightning's CSVLogger, written by ``zoo train``): rows carry
``epoch`` and ``step`` and the metrics logged at that step, empty elsewhere. The training metric is logged every
``trainer.log_every_n_steps`` steps and is placed at its fractional epoch (the validation rows give each epoch's
last step); the validation metric is logged once per epoch and is drawn as ``1 - value`` (an accuracy becomes
an error). Prints, per run, the mean training metric over the last epoch and the last and best validation error.

    python tools/plot_curves.py runs/degradation/plain20 runs/degradation/plain56 --out curves.png
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.curves import log_files, read_scalars

__all__ = ["Curves", "read_run", "plot_runs", "main"]


@dataclass
class Curves:
    """One run's curves. ``train_epoch`` is fractional (0 = start of training, 1 = end of the first epoch)."""

    name: str
    train_epoch: np.ndarray
    train: np.ndarray
    val_epoch: np.ndarray  # 1-based: the value after that many epochs
    val_error: np.ndarray

    def last_epoch_train(self) -> float:
        """Mean of the training metric over the last epoch's logged steps."""
        last = np.ceil(self.train_epoch.max())
        return float(self.train[self.train_epoch > last - 1].mean())


def read_run(run: str | Path, *, metric: str = "train/loss", val_metric: str = "val/top1") -> Curves:
    """One run's ``metric`` and ``val_metric`` from its logs (``zoo.curves.read_scalars``).

    Raises:
        SystemExit: the logs are missing, or lack ``metric`` / ``val_metric`` (the message lists what was logged).
    """
    run = Path(run)
    if not log_files(run):
        raise SystemExit(f"{run / 'logs' / 'metrics.csv'}: no such file (is {run} a run folder written by `zoo train`?)")
    scalars = read_scalars(run)
    for name in (metric, val_metric):
        if name not in scalars:
            raise SystemExit(f"{run}: no column {name!r} logged; it has {sorted(scalars)}")
    train, val = scalars[metric], scalars[val_metric]
    return Curves(name=run.name, train_epoch=train.epoch, train=train.value, val_epoch=val.epoch,
                  val_error=1.0 - val.value)


def plot_runs(curves: list[Curves], out: str | Path, *, metric: str = "train/loss",
              val_metric: str = "val/top1") -> Path:
    """Both panels for all runs, one colour per run; returns the written PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    for c in curves:
        line, = left.plot(c.train_epoch, c.train, lw=1, label=c.name)
        right.plot(c.val_epoch, c.val_error, marker="o", ms=3, color=line.get_color(), label=c.name)
    left.set(xlabel="epoch", ylabel=metric, title=f"training: {metric} (one batch per point)")
    right.set(xlabel="epoch", ylabel=f"1 - {val_metric}", title=f"validation error: 1 - {val_metric}")
    for ax in (left, right):
        ax.set_yscale("log", nonpositive="clip")  # both span decades; an error of 0 sits at the bottom edge
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by `zoo train`")
    parser.add_argument("--out", required=True, metavar="FILE.png", help="picture to write")
    parser.add_argument("--metric", default="train/loss", help="training metric, left panel (default train/loss)")
    parser.add_argument("--val-metric", default="val/top1",
                        help="validation accuracy drawn as error 1 - value, right panel (default val/top1)")
    args = parser.parse_args(argv)
    curves = [read_run(r, metric=args.metric, val_metric=args.val_metric) for r in args.runs]
    width = max(len(c.name) for c in curves)
    print(f"{'run':<{width}}  {args.metric} (last epoch mean)  final val error  best val error")
    for c in curves:
        print(f"{c.name:<{width}}  {c.last_epoch_train():>27.4f}  {c.val_error[-1]:>15.4f}  {c.val_error.min():>14.4f}")
    print(f"wrote {plot_runs(curves, args.out, metric=args.metric, val_metric=args.val_metric)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
