"""The joint multi-task model against three single-task models: same split, same wall-clock budget each.

``recipes/multitask_shapes.py`` trains one ResNet-10-T with detection, segmentation and captioning heads. Each
single-task model is that recipe with one head and its loss (same data adapter and split, augmentation, optimizer,
schedule). Every model gets the same budget (``--minutes``): a short probe measures each model's seconds per
training step on this machine, ``max_epochs`` is set to the epochs that fit in the budget (at least 1; the schedule
anneals over them), and ``trainer.max_time`` caps the run at the budget. Then each model's best checkpoint is
evaluated on the test split.

Reported: each task's test metric (det ``map50`` and ``map``, seg ``miou``, cap ``cider`` and ``bleu4``) for joint
and single, their ratio (target ≥ 0.95), and parameters and forward FLOPs per image (torch's FlopCounterMode, one
64x64 image, captions teacher-forced at their mean length) of the joint model against the sum of the three single
models (target ≤ 0.5).

    python tools/bench_multitask.py --minutes 8 --runs runs/bench_multitask --json runs/bench_multitask/bench.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from zoo.engine import train
from zoo.engine.datamodule import ZooDataModule
from zoo.engine.module import ZooModule
from zoo.engine.run import prepare_data
from zoo.recipe import ModelSpec, Recipe, load_recipe

WANTED = {"det": ("map50", "map"), "seg": ("miou",), "cap": ("cider", "bleu4")}


def single(joint: Recipe, name: str) -> Recipe:
    """The joint recipe with head ``name`` alone (its loss; the task's default monitor)."""
    return dataclasses.replace(
        joint, name=f"{joint.name}_{name}_only",
        model=ModelSpec(backbone=joint.model.backbone, head=joint.model.heads[name]), loss=joint.loss.heads[name],
        trainer=dataclasses.replace(joint.trainer, monitor=None))


def cost(recipe: Recipe, splits) -> tuple[int, float]:
    """Parameters and forward FLOPs per image of the recipe's model on one validation batch."""
    module = ZooModule(recipe, splits.classes).eval()
    images, targets = next(iter(ZooDataModule(recipe, splits).split_loader("val")))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module.model.run_heads(images, targets, module.target_keys)
    return sum(p.numel() for p in module.parameters()), counter.get_total_flops() / len(images)


def seconds_per_step(recipe: Recipe, splits, steps: int = 12) -> float:
    """Mean seconds of a training step (forward, backward, optimizer) after 2 warm-up steps."""
    module = ZooModule(recipe, splits.classes).train()
    optimizer = recipe.optim.build(module)
    loader = itertools.cycle(ZooDataModule(recipe, splits).train_dataloader())
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        _, loss, _ = module._losses(next(loader))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="wall-clock training budget of each model")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_multitask"))
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("overrides", nargs="*", help="overrides of recipes/multitask_shapes.py (all four models)")
    args = parser.parse_args(argv)
    joint = load_recipe("recipes/multitask_shapes.py", args.overrides)
    recipes = {"joint": joint, **{name: single(joint, name) for name in joint.model.heads}}
    splits = prepare_data(joint)
    steps_per_epoch = len(splits.train) // joint.data.batch_size
    budget = args.minutes * 60
    rows: dict[str, dict] = {}
    for role, recipe in recipes.items():
        params, flops = cost(recipe, splits)
        step = seconds_per_step(recipe, splits)
        # validation and the per-epoch overhead take about a sixth of an epoch's training time on this set
        epochs = max(1, int(budget / (step * steps_per_epoch * 1.2)))
        minutes, seconds = divmod(int(budget), 60)
        timed = recipe.override(**{"trainer.max_epochs": epochs, "trainer.max_time": f"00:00:{minutes:02d}:{seconds:02d}"})
        start = time.perf_counter()
        train(timed, args.runs / role)
        took = time.perf_counter() - start
        metrics = json.loads((args.runs / role / "metrics.json").read_text())
        rows[role] = {"params": params, "flops_per_image": flops, "seconds_per_step": step, "epochs": epochs,
                      "train_and_test_seconds": took, "metrics": metrics}
        print(f"{role}: {epochs} epochs, {took:.0f} s, {params:,} params, {flops / 1e6:.1f} MFLOPs/image", flush=True)
    report = {"command": " ".join(["python", *map(shlex.quote, sys.argv)]), "machine": platform.platform(),
              "cpus": torch.get_num_threads(), "budget_minutes": args.minutes, "models": rows, "ratios": {}}
    for name, keys in WANTED.items():
        for key in keys:
            joint_value = rows["joint"]["metrics"][f"{name}/{key}"]
            single_value = rows[name]["metrics"][key]
            report["ratios"][f"{name}/{key}"] = {"joint": joint_value, "single": single_value,
                                                 "ratio": joint_value / single_value if single_value else None}
    singles = [rows[name] for name in joint.model.heads]
    report["params_ratio"] = rows["joint"]["params"] / sum(r["params"] for r in singles)
    report["flops_ratio"] = rows["joint"]["flops_per_image"] / sum(r["flops_per_image"] for r in singles)
    print(json.dumps({k: report[k] for k in ("ratios", "params_ratio", "flops_ratio")}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
