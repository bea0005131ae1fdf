"""Training curves from a run folder: every scalar ``zoo train`` logged, read back from Lightning's CSV logs, and the
``curves.png`` pictures drawn from them.

A run's ``logs/metrics.csv`` (Lightning's ``CSVLogger``) has one row per logging call: ``step`` (0-based index of the
optimizer step), ``epoch`` (empty on the learning-rate monitor's rows) and the values logged then, other cells
empty. A resumed run continues in ``logs/resumed_<n>/metrics.csv``; its rows replace the earlier parts' rows from
the step it resumed at (what the interrupted run logged after its last checkpoint was trained again).

Each scalar gets a position in training in epochs: per-step values at their fractional epoch (the epochs' last
steps come from the rows that carry an epoch), per-epoch values (validation metrics) at the end of their epoch.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Scalar", "read_scalars", "log_files", "head_names", "panels", "plot_curves", "write_curves"]


@dataclass
class Scalar:
    """One logged scalar: ``epoch`` is the position in training (1.0 = end of the first epoch), ``step`` the optimizer
    step that logged it, ``per_epoch`` whether it was logged once per epoch (validation metrics)."""

    name: str
    step: np.ndarray
    epoch: np.ndarray
    value: np.ndarray
    per_epoch: bool


def log_files(run: str | Path) -> list[Path]:
    """The run's CSV logs in the order they were written: ``logs/metrics.csv``, then ``logs/resumed_1/...``, ..."""
    logs = Path(run) / "logs"
    resumed = sorted(logs.glob("resumed_*/metrics.csv"), key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0))
    return [p for p in [logs / "metrics.csv", *resumed] if p.is_file()]


def _number(text: str | None) -> float | None:
    if text in (None, ""):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _rows(run: str | Path) -> list[dict[str, str]]:
    """All parts' rows, each later part replacing the earlier rows from the step it starts at."""
    rows: list[dict[str, str]] = []
    for path in log_files(run):
        with path.open(newline="") as f:
            part = [r for r in csv.DictReader(f) if _number(r.get("step")) is not None]
        if part:
            start = min(float(r["step"]) for r in part)
            rows = [r for r in rows if float(r["step"]) < start] + part
    return rows


def read_scalars(run: str | Path) -> dict[str, Scalar]:
    """Every scalar logged in ``run`` (a folder written by ``zoo train``), by its logged name (``train/loss``,
    ``val/top1``, ``lr/head``, ``val/det/map50``). Empty when the run has logged nothing yet."""
    rows = _rows(run)
    if not rows:
        return {}
    # the last step of each epoch: the largest step among the rows that carry that epoch
    ends: dict[int, float] = {}
    for r in rows:
        e = _number(r.get("epoch"))
        if e is not None:
            ends[int(e)] = max(ends.get(int(e), -1.0), float(r["step"]))
    epochs = sorted(ends)
    done = np.array([ends[e] + 1 for e in epochs], dtype=float)  # steps done at the end of each epoch
    done = np.maximum.accumulate(done) if len(done) else done
    per_step_rate = done[-1] / len(done) if len(done) and done[-1] > 0 else 1.0

    def position(step: float) -> float:
        if not len(done):
            return 0.0
        count = step + 1
        if count > done[-1]:  # after the last epoch's end (an interrupted epoch): extrapolate
            return len(done) + (count - done[-1]) / per_step_rate
        return float(np.interp(count, np.concatenate([[0.0], done]), np.arange(len(done) + 1.0)))

    names = [c for c in rows[0] if c not in ("epoch", "step")]
    for r in rows[1:]:
        names.extend(c for c in r if c not in names and c not in ("epoch", "step"))
    found: dict[str, Scalar] = {}
    for name in names:
        points = [(float(r["step"]), _number(r.get("epoch")), _number(r.get(name))) for r in rows]
        points = [(s, e, v) for s, e, v in points if v is not None]
        if not points:
            continue
        per_epoch = name.startswith("val/") or name.endswith("_epoch")
        steps = np.array([s for s, _, _ in points])
        if per_epoch:  # at the end of its epoch
            where = np.array([float(int(e)) + 1 if e is not None else position(s) for s, e, _ in points])
        else:
            where = np.array([position(s) for s in steps])
        found[name] = Scalar(name=name, step=steps, epoch=where, value=np.array([v for _, _, v in points]),
                             per_epoch=per_epoch)
    return found


def head_names(scalars: dict[str, Scalar]) -> list[str]:
    """The named heads of a multi-head run, read off its loss terms (``train/<head>/<term>``); [] for one head."""
    heads = []
    for name in scalars:
        parts = name.split("/")
        if parts[0] == "train" and len(parts) == 3 and parts[1] != "weight" and parts[1] not in heads:
            heads.append(parts[1])
    # a single head's per-class metrics (val/acc/<class>) have three parts too, but no train/<x>/<y> loss terms
    return heads


def panels(scalars: dict[str, Scalar], head: str | None = None) -> dict[str, list[Scalar]]:
    """The scalars grouped into the panels of one picture: losses, metrics, per-class metrics, learning rates (and the
    learned task weights). ``head``: only that head's losses and metrics (and the shared learning rates)."""
    heads = head_names(scalars)
    groups: dict[str, list[Scalar]] = {"loss": [], "metrics": [], "per-class metrics": [], "learning rate": [],
                                       "task weights": []}
    for name, s in sorted(scalars.items()):
        parts = name.split("/")
        split = parts[0]
        if split == "lr" or split.startswith("lr-"):
            if not name.endswith("_no_decay"):  # the no-decay twin of each group has the same rate
                groups["learning rate"].append(s)
            continue
        if split not in ("train", "val"):
            continue
        if np.all(s.value == -1):  # pycocotools' "not measured" (no objects of that size): nothing to draw
            continue
        rest = parts[1:]
        owner = rest[0] if heads and rest and rest[0] in heads else None
        if owner:
            rest = rest[1:]
        if head is not None and owner != head:
            continue
        if rest and rest[0] == "weight" and split == "train":
            groups["task weights"].append(s)
        elif rest and (rest[-1] == "loss" or split == "train"):
            groups["loss"].append(s)
        elif len(rest) >= 2:
            groups["per-class metrics"].append(s)
        else:
            groups["metrics"].append(s)
    return {k: v for k, v in groups.items() if v}


def plot_curves(scalars: dict[str, Scalar], out: str | Path, *, title: str = "", head: str | None = None) -> Path | None:
    """One PNG with a panel per group of :func:`panels`; ``None`` (nothing written) when nothing was logged."""
    groups = panels(scalars, head)
    if not groups:
        return None
    from matplotlib.figure import Figure

    columns = min(3, len(groups))
    rows = math.ceil(len(groups) / columns)
    fig = Figure(figsize=(5.2 * columns, 3.6 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax, (group, series) in zip(axes, groups.items()):
        many = len(series) > 8
        for s in series:
            ax.plot(s.epoch, s.value, marker="o" if (s.per_epoch and len(s.value) < 30) or len(s.value) < 3 else None, ms=3,
                    lw=0.8 if many else 1.2, label=s.name)
        values = np.concatenate([s.value for s in series])
        positive = np.isfinite(values) & (values > 0)
        if group in ("loss", "learning rate") and positive.all() and values.max() / values.min() > 30:
            ax.set_yscale("log")
        ax.set(xlabel="epoch", title=group)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6 if many else 8, ncol=2 if many else 1)
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def write_curves(run: str | Path) -> list[Path]:
    """``run/curves.png`` from the run's logs, and ``run/curves_<head>.png`` per named head of a multi-head run.
    Returns the written files (none before anything was logged)."""
    run = Path(run)
    scalars = read_scalars(run)
    written = [plot_curves(scalars, run / "curves.png", title=run.name)]
    for head in head_names(scalars):
        written.append(plot_curves(scalars, run / f"curves_{head}.png", title=f"{run.name}: head {head}", head=head))
    return [p for p in written if p is not None]
