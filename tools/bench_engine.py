"""The engine's training step against a plain PyTorch loop: same recipe, model, optimizer, loss and data, one run.

Both sides train a freshly built model (same seed) on the same in-memory random images, through DataLoaders with
the same settings (``num_workers=0``, shuffled, ``drop_last``). The engine side is ``ZooModule`` fitted by the
Trainer that ``zoo.engine.run`` configures (no logger, no checkpoints, no progress bar, no validation); the plain
side is ``next(batch) → zero_grad → forward → loss → backward → step``. A step's time runs from the end of the
previous step to the end of this one, so every per-step cost of the framework (data fetching, hooks, logging) is
inside it. ms/step is the time of the timed steps (after ``--warmup``) divided by their number.

Two ways to share the machine fairly (``--mode``):

* ``lockstep`` (default): one engine run that performs one plain step right after each of its own steps (from a
  callback), so both sides see the same load from moment to moment, even when other processes share the CPU.
* ``alternate``: whole runs, engine then plain, swapping which goes first each repeat. Only right on a quiet machine.

Either way the median of ``--repeats`` runs of each side is reported.

``--clock cpu`` times with this process's CPU time instead of the wall clock: other processes then only reach the
result through caches, not through the time slices they take. Pair it with ``--threads 1`` (idle OpenMP threads
spin, and that spinning would count).

    python tools/bench_engine.py --json /tmp/bench.json

Records go in docs/benchmarks.md ("Engine vs plain PyTorch loop").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from heads import Classifier, CrossEntropy
from zoo.data import DigitsData
from zoo.data.targets import Labelled
from zoo.engine.module import ZooModel, ZooModule
from zoo.engine.run import _quiet_lightning, _trainer
from zoo.recipe import BackboneSpec, Optim, Recipe, Trainer

TARGET = 1.03  # the engine may be at most 3 % slower than the plain loop
CLASSES = tuple(str(d) for d in range(10))


def bench_recipe(args: argparse.Namespace) -> Recipe:
    """The run both sides train; its data spec only sizes the images (the data itself is random)."""
    return Recipe(
        name="bench_engine",
        data=DigitsData(batch_size=args.batch_size, image_size=args.image_size, channels=3, num_workers=0),
        model=BackboneSpec(name=args.backbone, in_chans=3) | Classifier(),
        loss=CrossEntropy(),
        optim=Optim(name="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4),
        trainer=Trainer(max_epochs=1, accelerator="cpu", devices=1),
    )


def random_data(recipe: Recipe, batches: int) -> TensorDataset:
    d = recipe.data
    g = torch.Generator().manual_seed(0)
    n = d.batch_size * batches
    images = torch.randn(n, d.channels, d.image_size, d.image_size, generator=g)  # [N, C, H, W], normalised
    labels = torch.randint(0, len(CLASSES), (n,), generator=g)  # [N] int64 class ids
    return TensorDataset(images, labels)


def engine_batch(samples: list) -> tuple[torch.Tensor, dict[str, Labelled]]:
    """The engine's batch format (``zoo.data.targets.collate_samples``): images and ``{"label": Labelled}``."""
    images, labels = torch.utils.data.default_collate(samples)
    return images, {"label": Labelled(labels, torch.arange(len(labels)))}


def loader(recipe: Recipe, data: TensorDataset, *, engine: bool = False) -> DataLoader:
    """The settings ``ZooDataModule`` uses for training with ``num_workers=0`` on a CPU; the engine side gets the
    engine's batch format (its cost is part of what the engine adds)."""
    return DataLoader(data, batch_size=recipe.data.batch_size, shuffle=True, drop_last=True, num_workers=0,
                      generator=torch.Generator().manual_seed(recipe.seed), collate_fn=engine_batch if engine else None)


class PlainLoop:
    """The hand-written loop: the recipe's model, optimizer and loss, one ``step()`` per batch."""

    def __init__(self, recipe: Recipe, data: TensorDataset) -> None:
        torch.manual_seed(recipe.seed)
        self.model = ZooModel(recipe, {"label": CLASSES}).train()
        self.optimizer = recipe.optim.build(self.model)
        self.criterion = recipe.loss.build(self.model.head)
        self.batches = iter(loader(recipe, data))

    def step(self) -> None:
        images, labels = next(self.batches)
        self.optimizer.zero_grad()
        loss = sum(self.criterion(self.model(images), labels).values())
        loss.backward()
        self.optimizer.step()


class StepClock(L.Callback):
    """``now()`` at the end of every engine step; with ``plain``, one plain step after each."""

    def __init__(self, now: Callable[[], float], plain: PlainLoop | None = None) -> None:
        self.now, self.plain = now, plain
        self.engine_ends: list[float] = []
        self.plain_ends: list[float] = []

    def on_train_batch_end(self, *args: object) -> None:
        self.engine_ends.append(self.now())
        if self.plain is not None:
            with torch.enable_grad():
                self.plain.step()
            self.plain_ends.append(self.now())


def fit_engine(recipe: Recipe, data: TensorDataset, steps: int, clock: StepClock) -> ZooModule:
    torch.manual_seed(recipe.seed)
    module = ZooModule(recipe, {"label": CLASSES})
    trainer = _trainer(recipe, None, [clock], enable_progress_bar=False, limit_train_batches=steps,
                       limit_val_batches=0, num_sanity_val_steps=0, max_epochs=1)
    trainer.fit(module, train_dataloaders=loader(recipe, data, engine=True))
    if len(clock.engine_ends) != steps:
        raise RuntimeError(f"the engine ran {len(clock.engine_ends)} steps, expected {steps}")
    return module


def step_times(starts: list[float], ends: list[float]) -> list[float]:
    """Seconds of step i, from ``starts[i - 1]`` (the end of whatever ran before it) to ``ends[i]``; i >= 1."""
    return [e - s for s, e in zip(starts, ends[1:])]


def run_alternate(recipe: Recipe, data: TensorDataset, steps: int, now: Callable[[], float],
                  first: str) -> tuple[dict[str, list[float]], float | None]:
    """Whole runs one after the other; step times of each side (no weight comparison)."""
    times = {}
    for side in (first, "plain" if first == "engine" else "engine"):
        if side == "engine":
            clock = StepClock(now)
            fit_engine(recipe, data, steps, clock)
            times[side] = step_times(clock.engine_ends, clock.engine_ends)
        else:
            plain, ends = PlainLoop(recipe, data), []
            for _ in range(steps):
                plain.step()
                ends.append(now())
            times[side] = step_times(ends, ends)
    return times, None


def run_lockstep(recipe: Recipe, data: TensorDataset, steps: int,
                 now: Callable[[], float]) -> tuple[dict[str, list[float]], float | None]:
    """One engine run with a plain step after each of its steps; step times, and the largest weight difference."""
    plain = PlainLoop(recipe, data)
    clock = StepClock(now, plain)
    module = fit_engine(recipe, data, steps, clock)
    e, p = clock.engine_ends, clock.plain_ends  # e[i] < p[i] < e[i + 1]
    times = {"engine": step_times(p, e), "plain": [pi - ei for ei, pi in zip(e[1:], p[1:])]}
    # Same seed, batches and optimizer: both models should still hold the same weights (the work was the same).
    drift = max((a - b).abs().max().item() for a, b in zip(module.model.parameters(), plain.model.parameters()))
    return times, drift


def summarise(times: list[float], warmup: int) -> dict[str, float]:
    """Mean ms/step over the timed steps, and the median single step (robust to a noisy neighbour)."""
    timed = times[warmup - 1:]  # times[0] is step 1
    return {"ms_per_step": 1e3 * sum(timed) / len(timed), "median_step_ms": 1e3 * statistics.median(timed)}


def machine(threads: int) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, lightning {L.__version__}, "
            f"python {platform.python_version()}, {threads} threads")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="resnet18", help="backbone registry name")
    p.add_argument("--image-size", type=int, default=32, help="square input side, pixels")
    p.add_argument("--batch-size", type=int, default=32, help="images per step")
    p.add_argument("--steps", type=int, default=60, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before them")
    p.add_argument("--repeats", type=int, default=3, help="runs per side; the median is reported")
    p.add_argument("--mode", choices=("lockstep", "alternate"), default="lockstep",
                   help="interleave single steps (fair on a shared CPU), or alternate whole runs")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time, or this process's CPU time (steadier on a shared CPU; use with --threads 1)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 2 or args.repeats < 1:
        p.error("need --warmup >= 1, --steps >= 2, --repeats >= 1")

    torch.set_num_threads(args.threads)
    _quiet_lightning()
    warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    command = shlex.join([python, *(sys.argv if argv is None else ["tools/bench_engine.py", *argv])])
    now = time.perf_counter if args.clock == "wall" else time.process_time
    recipe = bench_recipe(args)
    total = args.warmup + args.steps
    data = random_data(recipe, total)
    print(f"command: {command}\nmachine: {machine(args.threads)}\n"
          f"work:    {args.backbone} at {args.image_size}x{args.image_size}, batch {args.batch_size}, SGD; "
          f"{args.warmup} warm-up + {args.steps} timed steps, {args.repeats} repeats, {args.mode}, "
          f"{args.clock} clock", flush=True)

    runs: dict[str, list[dict[str, float]]] = {"engine": [], "plain": []}
    for r in range(args.repeats):
        if args.mode == "lockstep":
            times, drift = run_lockstep(recipe, data, total, now)
        else:
            times, drift = run_alternate(recipe, data, total, now, first="engine" if r % 2 == 0 else "plain")
        for side, t in times.items():
            runs[side].append(summarise(t, args.warmup))
            print(f"  repeat {r + 1} {side:6s} {runs[side][-1]['ms_per_step']:8.2f} ms/step "
                  f"(median step {runs[side][-1]['median_step_ms']:.2f} ms)", flush=True)
        if drift is not None:
            print(f"  repeat {r + 1} largest weight difference engine vs plain after {total} steps: {drift:.3g}")

    median = {side: {m: statistics.median(run[m] for run in v) for m in ("ms_per_step", "median_step_ms")}
              for side, v in runs.items()}
    ratio = median["engine"]["ms_per_step"] / median["plain"]["ms_per_step"]
    ratio_steps = median["engine"]["median_step_ms"] / median["plain"]["median_step_ms"]
    passed = ratio <= TARGET
    print(f"engine: {median['engine']['ms_per_step']:.2f} ms/step (median of {args.repeats} runs)\n"
          f"plain:  {median['plain']['ms_per_step']:.2f} ms/step (median of {args.repeats} runs)\n"
          f"ratio = engine / plain = {ratio:.4f}  (of median single steps: {ratio_steps:.4f})\n"
          f"{'PASS' if passed else 'FAIL'}: ratio {'<=' if passed else '>'} {TARGET}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": command, "machine": machine(args.threads), "args": {k: str(v) for k, v in vars(args).items()},
            "runs": runs, "median": median, "ratio": ratio, "ratio_median_step": ratio_steps, "target": TARGET,
            "pass": passed}, indent=1))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
