"""Evaluation pictures: predictions decoded and drawn next to the truth, for the first images of a split
(``predictions_<split>.png``) and for the worst ones (``worst_<group>.png``, ranked by each task's ``judge``).

Every picture carries its task's legend beneath it, so what the marks mean is in the picture itself.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import move_data_to_device
from PIL import Image

from zoo.draw import font_size, text_below
from zoo.engine.datamodule import lightning_limit
from zoo.task import Geometry

__all__ = ["to_uint8_images", "picture_grid", "decode_outputs", "draw_prediction", "evaluated_images",
           "save_prediction_grid", "save_worst_examples", "WORST_COUNT"]

WORST_COUNT = 8  # worst examples kept per head and group


def to_uint8_images(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised model inputs ``[N, C, H, W]`` back to ``uint8 [N, H, W, C]`` pictures."""
    c = batch.shape[1]
    m = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1).expand(1, c, 1, 1)
    sd = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1).expand(1, c, 1, 1)
    pixels = (batch.detach().float().cpu() * sd + m).clamp(0, 1) * 255
    return pixels.round().byte().permute(0, 2, 3, 1).numpy()


def picture_grid(pictures: Sequence[np.ndarray], *, columns: int = 4, gap: int = 4) -> np.ndarray:
    """Tiles ``uint8 [h, w, 3]`` pictures of any sizes into one white-separated grid."""
    pictures = [np.repeat(p, 3, axis=2) if p.ndim == 3 and p.shape[2] == 1 else p for p in pictures]
    h = max(p.shape[0] for p in pictures)
    w = max(p.shape[1] for p in pictures)
    rows = -(-len(pictures) // columns)
    cols = min(columns, len(pictures))
    grid = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), 255, np.uint8)
    for i, p in enumerate(pictures):
        y, x = gap + (i // columns) * (h + gap), gap + (i % columns) * (w + gap)
        grid[y:y + p.shape[0], x:x + p.shape[1]] = p
    return grid


def decode_outputs(module: Any, outputs: Any, geometry: Geometry) -> list[dict]:
    """Model outputs → one JSON-able prediction per image: the task's dict for a single head, ``{name: dict}`` for
    named heads. Decoding (NMS, beam search, argmax) happens here, outside the graph."""
    per_head = outputs if not module.model.single else {"": outputs}
    decoded = {name: type(ctx.spec).task.predict(per_head[name], ctx, geometry) for name, ctx in module.contexts.items()}
    count = len(next(iter(decoded.values())))
    if module.model.single:
        return decoded[""]
    return [{name: decoded[name][i] for name in decoded} for i in range(count)]


def draw_prediction(module: Any, picture: np.ndarray, prediction: dict,
                    targets: dict[str, Any] | None = None) -> np.ndarray | None:
    """One picture of one image's prediction: the task's drawing for a single head; each named head's drawing side by
    side for named heads (heads without a drawing are left out). ``targets``: head name → that image's target."""
    drawn = []
    for name, ctx in module.contexts.items():
        draw = type(ctx.spec).task.draw
        if draw is None:
            continue
        pred = prediction if module.model.single else prediction[name]
        drawn.append(draw(picture, pred, (targets or {}).get(name), ctx.classes))
    if not drawn:
        return None
    return drawn[0] if len(drawn) == 1 else picture_grid(drawn, columns=len(drawn))


@torch.no_grad()
def evaluated_images(module: Any, loader: Any, *, limit: int | None = None
                     ) -> Iterator[tuple[np.ndarray, dict, dict[str, Any]]]:
    """``(picture uint8 [H, W, C], prediction, {head name: that image's target})`` for each image of ``loader``
    (the first ``limit`` only; the batches ``trainer.limit_test_batches`` lets the test pass see), predictions
    decoded in model-input coordinates. A head lacking an image's target has no entry for it."""
    recipe = module.recipe
    seen = 0
    allowed = lightning_limit(recipe.trainer.limit_test_batches)
    batches = allowed if isinstance(allowed, int) else math.ceil(allowed * len(loader))
    for images, targets in itertools.islice(loader, batches):
        if limit is not None:
            images = images[:limit - seen]
        outputs = move_data_to_device(module(images.to(module.device)), "cpu")
        predictions = decode_outputs(module, outputs, Geometry(input_size=tuple(images.shape[-2:]),
                                                               resize=recipe.aug.resize))
        pictures = to_uint8_images(images, recipe.data.mean, recipe.data.std)
        # per head: batch position -> that image's target (samples lacking the head's target have none)
        truths = {name: {int(i): targets[key].value[j] for j, i in enumerate(targets[key].index)}
                  for name, key in module.target_keys.items() if key in targets}
        for i, (picture, prediction) in enumerate(zip(pictures, predictions)):
            yield picture, prediction, {n: t[i] for n, t in truths.items() if i in t}
        seen += len(images)
        if limit is not None and seen >= limit:
            return


def _legend(module: Any, heads: Sequence[str] | None = None) -> list[str]:
    names = list(heads if heads is not None else module.contexts)
    legends = [(name, type(module.contexts[name].spec).task.legend) for name in names]
    return [f"{name}: {text}" if name and len(legends) > 1 else text for name, text in legends if text]


def _save(picture: np.ndarray, legend: list[str], path: Path) -> Path:
    """``picture`` with the legend beneath in a size readable next to the cells' own labels (a grid's font would grow
    with the whole grid)."""
    size = min(20, max(12, font_size(picture) // 2))
    Image.fromarray(text_below(picture, legend, size=size) if legend else picture).save(path)
    return path


def save_prediction_grid(module: Any, loader: Any, path: Path, *, count: int = 16) -> Path | None:
    """The first ``count`` images of ``loader`` with their predictions and truth, drawn by the heads' tasks, the
    tasks' legends beneath."""
    if all(type(ctx.spec).task.draw is None for ctx in module.contexts.values()):
        return None
    drawn = [draw_prediction(module, picture, prediction, truth)
             for picture, prediction, truth in evaluated_images(module, loader, limit=count)]
    return _save(picture_grid(drawn), _legend(module), Path(path))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def save_worst_examples(module: Any, loader: Any, out: Path, *, count: int = WORST_COUNT) -> list[dict]:
    """The ``count`` worst predictions of the split per head and per group of its task's ``judge``, each drawn next to
    its truth with the judge's note beneath: ``<head folder>/worst_<group>.png`` and ``worst.json`` (head, group,
    picture, and per example its position in the split, badness and note). Returns the ``worst.json`` entries."""
    judged = {name: ctx for name, ctx in module.contexts.items()
              if type(ctx.spec).task.judge is not None and type(ctx.spec).task.draw is not None}
    if not judged:
        return []
    worst: dict[tuple[str, str], list] = {}  # min-heaps of (badness, -position, position, picture, prediction, truth)
    for position, (picture, prediction, truths) in enumerate(evaluated_images(module, loader)):
        for name, ctx in judged.items():
            if name not in truths:
                continue
            pred = prediction if module.model.single else prediction[name]
            verdict = type(ctx.spec).task.judge(pred, truths[name], ctx.classes)
            if verdict is None:
                continue
            group, badness, note = verdict
            heap = worst.setdefault((name, group), [])
            item = (float(badness), -position, position, note, picture, pred, truths[name])
            if len(heap) < count:
                heapq.heappush(heap, item)
            elif item[:2] > heap[0][:2]:
                heapq.heapreplace(heap, item)
    entries = []
    for (name, group), heap in sorted(worst.items()):
        ranked = sorted(heap, key=lambda item: item[:2], reverse=True)
        ctx = module.contexts[name]
        task = type(ctx.spec).task
        drawn = [text_below(task.draw(picture, pred, truth, ctx.classes), [note])
                 for _, _, _, note, picture, pred, truth in ranked]
        folder = Path(out) / name if name else Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        path = _save(picture_grid(drawn), _legend(module, [name]), folder / f"worst_{_slug(group)}.png")
        entries.append({"head": name, "task": task.name, "group": group, "picture": str(path.relative_to(out)),
                        "examples": [{"position": position, "badness": round(badness, 6), "note": note}
                                     for badness, _, position, note, *_ in ranked]})
    (Path(out) / "worst.json").write_text(json.dumps(entries, indent=1))
    return entries
