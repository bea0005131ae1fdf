"""Transfer against scratch: one pretrained backbone fine-tuned on a small, different task with each strategy.

The source is the ResNet-10-T of a shapes *detector* (``recipes/detect_shapes_yolo.py``, trained first); the target
is ``recipes/finetune_shapes_classifier.py``: 150 shapes images of another render seed, one object each, classified
as circle / square / triangle. Every strategy is that recipe with a few overrides (same data, split, epochs, seed,
EMA and mixup); scratch has no weights. Reported per strategy: validation ``top1`` after every epoch, the best
checkpoint's test ``top1``, the first epoch whose validation ``top1`` reaches scratch's final value, and a plot of
the validation curves. Also runs ``zoo tune lr`` on the fine-tune recipe (its range-test plot).

    python tools/bench_finetune.py --weights runs/detect_shapes_yolo/best.ckpt --runs runs/bench_finetune2
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path

from zoo.engine import train
from zoo.engine.tune import find_lr
from zoo.recipe import load_recipe

RECIPE = "recipes/finetune_shapes_classifier.py"
NO_FREEZE = {"model.backbone.freeze": False, "model.backbone.unfreeze_at_epoch": None}
STRATEGIES = {
    "scratch": {**NO_FREEZE, "model.weights": None, "optim.layer_decay": None},
    "linear probe": {"model.backbone.unfreeze_at_epoch": None, "optim.layer_decay": None},
    "full fine-tune": {**NO_FREEZE, "optim.layer_decay": None},
    "freeze-then-unfreeze": {"optim.layer_decay": None},
    "layer-wise decay": {**NO_FREEZE},
    "freeze-then-unfreeze + layer decay (the recipe)": {},
}


def _val_curve(run: Path, monitor: str) -> list[float]:
    rows = list(csv.DictReader((run / "logs" / "metrics.csv").open()))
    return [float(r[f"val/{monitor}"]) for r in rows if r.get(f"val/{monitor}")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default="runs/detect_shapes_yolo/best.ckpt", help="the pretrained source checkpoint")
    ap.add_argument("--runs", default="runs/bench_finetune", help="folder for the runs, table and plots")
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    runs = Path(args.runs)
    results = {}
    for name, overrides in STRATEGIES.items():
        weights = {} if "model.weights" in overrides else {"model.weights": args.weights}
        recipe = load_recipe(RECIPE).override(**{**weights, **overrides, "trainer.max_epochs": args.epochs})
        out = runs / name.split(" (")[0].replace(" ", "_").replace("+", "and")
        start = time.perf_counter()
        metrics = train(recipe, out, overwrite=True)
        results[name] = {"val": _val_curve(out, "top1"), "test_top1": metrics["top1"],
                         "seconds": time.perf_counter() - start}
    target = results["scratch"]["val"][-1]
    lines = [f"{platform.node()} ({platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores), "
             f"{time.strftime('%Y-%m-%d')}; {args.epochs} epochs each; scratch's final val top1 {target:.2f}", "",
             "| strategy | val top1, epochs 1 → N | epochs to scratch's final val | test top1 |", "|---|---|---|---|"]
    for name, r in results.items():
        reach = next((i + 1 for i, v in enumerate(r["val"]) if v >= target), None)
        r["epochs_to_scratch_final"] = reach
        lines.append(f"| {name} | {' '.join(f'{v:.2f}' for v in r['val'])} | {reach or '—'} | {r['test_top1']:.3f} |")
    table = "\n".join(lines)
    print(table)
    (runs / "table.md").write_text(table + "\n")
    (runs / "results.json").write_text(json.dumps(results, indent=1))

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in results.items():
        ax.plot(range(1, len(r["val"]) + 1), r["val"], marker="o", label=name)
    ax.set(xlabel="epoch", ylabel="val top1", title="fine-tuning a detector's backbone vs scratch")
    ax.legend(fontsize=8)
    fig.savefig(runs / "finetune_curves.png", dpi=110, bbox_inches="tight")
    lr = find_lr(load_recipe(RECIPE).override(**{"model.weights": args.weights}), runs / "lr_find", steps=60)
    print(f"lr finder on the fine-tune recipe: suggestion {lr['suggestion']}, recipe {lr['recipe_lr']}")


if __name__ == "__main__":
    main()
