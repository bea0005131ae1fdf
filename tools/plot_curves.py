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
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


def _number(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def read_run(run: str | Path, *, metric: str = "train/loss", val_metric: str = "val/top1") -> Curves:
    """Reads ``run/logs/metrics.csv``.

    Raises:
        SystemExit: the file is missing, or lacks ``metric`` / ``val_metric`` (the message lists its columns).
    """
    run = Path(run)
    path = run / "logs" / "metrics.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (is {run} a run folder written by `zoo train`?)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0]) if rows else []
    for name in (metric, val_metric, "step", "epoch"):
        if name not in columns:
            raise SystemExit(f"{path}: no column {name!r}; it has {columns}")
    train = [(float(r["step"]), float(r[metric])) for r in rows if _number(r[metric]) is not None]
    val = [(int(float(r["epoch"])), float(r["step"]), float(r[val_metric])) for r in rows
           if _number(r[val_metric]) is not None]
    if not train or not val:
        raise SystemExit(f"{path}: no {metric if not train else val_metric} values logged yet")
    steps, train_values = np.array(train).T
    epochs, ends, values = np.array(val).T
    # ``step`` is the 0-based index of the optimizer step; epoch e ends with the step of its validation row. Map
    # the count of steps done (index + 1) to fractional epochs through those ends.
    done, ends = steps + 1, ends + 1
    train_epoch = np.interp(done, np.concatenate([[0.0], ends]), np.arange(len(ends) + 1.0))
    late = done > ends.max()  # steps after the last validation (an interrupted run): extrapolate linearly
    train_epoch[late] = len(ends) + (done[late] - ends.max()) / (ends.max() / len(ends))
    return Curves(name=run.name, train_epoch=train_epoch, train=train_values, val_epoch=epochs + 1,
                  val_error=1.0 - values)


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
