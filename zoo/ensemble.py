"""Ensembles: several checkpoints of the same heads and classes, their outputs combined per head by the head's task
(``Task.combine``: averaged class probabilities, averaged per-pixel probabilities, detections pooled before one
class-wise NMS, averaged reconstructions), then decoded and scored as one model's.

``zoo eval A.ckpt B.ckpt ...`` is :func:`evaluate_ensemble`; ``zoo predict A.ckpt B.ckpt ... IMAGES`` and
``zoo.load([A, B])`` predict with :class:`zoo.inference.Model` over all members.

Test-time augmentation (``--tta hflip``) is an ensemble over views: each member also runs on the horizontally
flipped batch, the task maps those outputs back exactly (``Task.unflip``: boxes ``x -> W - x``, masks flipped back),
and every (member, view) is combined the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import move_data_to_device

from zoo.errors import ZooError
from zoo.recipe.parts import ModelSpec

__all__ = ["check_members", "check_tta", "combine_outputs", "view_outputs", "evaluate_ensemble", "TTA"]

TTA = ("hflip",)  # test-time augmentations: names and what they do (module docstring)


def check_members(modules: Sequence[Any], checkpoints: Sequence[str | Path]) -> None:
    """Refuses an ensemble (two or more modules) whose members differ in heads, tasks, classes or input size, or
    whose task cannot combine outputs; one module passes."""
    first = modules[0]
    for name, ctx in first.contexts.items():
        task = type(ctx.spec).task
        if task.combine is None and len(modules) > 1:
            raise ZooError(f"{ModelSpec.path(name)}: the {task.name} task has no way to combine several models' "
                           f"outputs (Task.combine); an ensemble of {checkpoints[0]} is refused")
    for module, path in zip(modules[1:], checkpoints[1:]):
        mine = {n: (type(c.spec).task.name, c.classes) for n, c in module.contexts.items()}
        theirs = {n: (type(c.spec).task.name, c.classes) for n, c in first.contexts.items()}
        if mine != theirs:
            raise ZooError(f"{path}: its heads, tasks or classes differ from {checkpoints[0]}'s "
                           f"({_describe(mine)} vs {_describe(theirs)}); an ensemble needs the same")
        for field in ("image_size", "channels"):
            if getattr(module.recipe.data, field) != getattr(first.recipe.data, field):
                raise ZooError(f"{path}: data.{field} is {getattr(module.recipe.data, field)}, "
                               f"{checkpoints[0]}'s is {getattr(first.recipe.data, field)}; an ensemble needs the same")


def check_tta(first: Any, tta: Sequence[str]) -> None:
    """Refuses unknown augmentations and heads whose task cannot map a flipped view back."""
    for name in tta:
        if name not in TTA:
            raise ZooError(f"--tta {name!r}: choose from {', '.join(TTA)}")
    for head, ctx in first.contexts.items():
        task = type(ctx.spec).task
        if tta and (task.unflip is None or task.combine is None):
            raise ZooError(f"{ModelSpec.path(head)}: the {task.name} task cannot map a flipped view back and average "
                           f"it (Task.unflip, Task.combine); --tta {' '.join(tta)} is refused")


def view_outputs(first: Any, run: Any, images: torch.Tensor, tta: Sequence[str]) -> list[Any]:
    """``run(images)`` (head outputs as ``forward`` returns them) and, per augmentation, ``run`` on the transformed
    batch mapped back to ``images``."""
    views = [run(images)]
    if "hflip" in tta:
        flipped, width = run(images.flip(-1)), images.shape[-1]
        if first.model.single:
            views.append(type(first.contexts[""].spec).task.unflip(flipped, width))
        else:
            views.append({n: type(c.spec).task.unflip(flipped[n], width) for n, c in first.contexts.items()
                          if n in flipped})
    return views


def _describe(heads: dict) -> str:
    return ", ".join(f"{n or 'head'}: {task} of {len(classes)} classes" for n, (task, classes) in heads.items())


def combine_outputs(first: Any, per_member: Sequence[Any]) -> Any:
    """The members' outputs of a batch (each as ``module.forward`` returns them) combined head by head."""
    if len(per_member) == 1:
        return per_member[0]
    if first.model.single:
        return type(first.contexts[""].spec).task.combine(list(per_member))
    return {name: type(ctx.spec).task.combine([outputs[name] for outputs in per_member])
            for name, ctx in first.contexts.items()}


@torch.no_grad()
def evaluate_ensemble(checkpoints: Sequence[str | Path], *, split: str = "test",
                      overrides: dict[str, Any] | None = None, device: str = "auto",
                      tta: Sequence[str] = ()) -> dict[str, float]:
    """Metrics of the ensemble of ``checkpoints`` (one is fine with ``tta``) on one split of the first one's data
    (names as ``zoo eval``)."""
    from zoo.engine.datamodule import ZooDataModule
    from zoo.engine.datamodule import lightning_limit
    from zoo.engine.run import check_classes, load_module, prepare_data
    from zoo.inference import resolve_device

    where = resolve_device(device)
    modules = [load_module(c, overrides).to(where).eval() for c in checkpoints]
    check_members(modules, checkpoints)
    first = modules[0]
    check_tta(first, tta)
    splits = prepare_data(first.recipe)
    for module, path in zip(modules, checkpoints):
        check_classes(module, splits, path)
    metrics = dict(zip(first.contexts, first.test_metrics.values()))
    loader = ZooDataModule(first.recipe, splits).split_loader(split)
    limit = lightning_limit(first.recipe.trainer.limit_test_batches)  # as zoo eval's trainer.test reads it, on any split
    count = limit if isinstance(limit, int) else int(len(loader) * limit)
    for images, targets in itertools.islice(loader, count):
        images, targets = move_data_to_device((images, targets), where)
        ran = first.model.run_heads(images, targets, first.target_keys)  # which heads have targets, and whose
        runs = [outputs for m in modules for outputs in view_outputs(
            first, lambda x, m=m: {n: o for n, (o, _) in m.model.run_heads(x, targets, m.target_keys).items()},
            images, tta)]
        for name, ctx in first.contexts.items():
            if name in ran:
                metrics[name].update(type(ctx.spec).task.combine([run[name] for run in runs]), ran[name][1])
    values: dict[str, float] = {}
    for name, head_metrics in metrics.items():
        values.update({f"{ModelSpec.prefix(name)}{k}": v for k, v in head_metrics.compute().items()})
        head_metrics.reset()
    return values
