"""What a task plugs into the engine: a head, a loss, metrics and the targets its dataset adapter yields.

The engine only ever talks to these protocols; it never branches on a task's name. A new task is a
module in ``heads/`` that defines a :class:`Task` and the specs that point to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import nn

from zoo.backbones.base import FeatureInfo

__all__ = ["Task", "TaskMetrics", "HeadSpec", "LossSpec", "PredictOptions", "image_only"]


class TaskMetrics(Protocol):
    """Accumulates a task's metrics over batches (an ``nn.Module`` so it follows the model's device)."""

    def update(self, outputs: Any, targets: Any) -> None: ...

    def compute(self) -> dict[str, float]:
        """Flat ``name → number``; the names are what ``zoo eval --json`` writes."""
        ...

    def reset(self) -> None: ...

    def save_artifacts(self, out_dir: Path) -> list[Path]:
        """Pictures of the last ``compute`` (confusion matrices, curves); returns the written files."""
        ...


@dataclass(frozen=True, kw_only=True)
class PredictOptions:
    """What ``zoo predict`` (and the evaluation pictures) pass to a task's ``predict`` hook.

    Attributes:
        top_k: classes per image (classification) or per object.
        score_threshold / iou_threshold / max_detections: detection decoding and NMS settings.
        input_size: ``(H, W)`` of the model input the outputs refer to.
        image_sizes: ``(H, W)`` of each original image, for mapping boxes/masks back to it (``None``: keep input
            coordinates, as for the evaluation pictures drawn on the model inputs).
        resize: how images were fitted to ``input_size`` ("stretch" or "letterbox", see ``Augment.resize``).
    """

    top_k: int = 5
    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    input_size: tuple[int, int] = (0, 0)
    image_sizes: Sequence[tuple[int, int]] | None = None
    resize: str = "stretch"


def image_only(sample: dict, target: Any) -> tuple[torch.Tensor, Any]:
    """The default ``Task.finish_sample``: the transformed image, the target unchanged (a class id)."""
    return sample["image"], target


@dataclass(frozen=True)
class Task:
    """The hooks of one task.

    Attributes:
        name: shown to users ("classification").
        target: what the dataset adapter must yield next to each image ("label" for an int class id; "image"
            means the image itself, which every adapter yields).
        monitor: the validation metric that picks ``best.ckpt`` and drives plateau schedules.
        mode: whether ``monitor`` improves upward ("max") or downward ("min").
        make_metrics: ``(classes) -> TaskMetrics``.
        predict: ``(outputs, classes, PredictOptions) -> one JSON-able dict per image``.
        collate: batches ``(image, target)`` pairs; ``None`` for torch's default.
        pipeline_inputs: ``(image, target) -> dict`` of albumentations inputs (default ``{"image": image}``);
            a detection task adds ``bboxes`` and labels, segmentation a ``mask``, so they follow every transform.
        finish_sample: ``(pipeline output, target) -> (input tensor, target)`` after the pipeline ran.
        compose_kwargs: ``() -> dict`` of extra ``A.Compose`` arguments (``bbox_params``).
        draw: ``(image uint8 [H, W, C], prediction, target or None, classes) -> uint8 [h, w, 3]``: one picture of a
            prediction (next to the truth when given), for ``zoo predict --out`` and the evaluation grid.
        save_predictions: ``(results, classes, out_dir) -> written files``: task formats that ``zoo predict --out``
            writes next to ``predictions.json`` (COCO results for detection).
    """

    name: str
    target: str
    monitor: str
    mode: Literal["min", "max"]
    make_metrics: Callable[[Sequence[str]], nn.Module]
    predict: Callable[[Any, Sequence[str], PredictOptions], list[dict]]
    collate: Callable[[list], Any] | None = None
    pipeline_inputs: Callable[[Any, Any], dict] | None = None
    finish_sample: Callable[[dict, Any], tuple[Any, Any]] = image_only
    compose_kwargs: Callable[[], dict] | None = None
    draw: Callable[..., Any] | None = None
    save_predictions: Callable[[list[dict], Sequence[str], Path], list[Path]] | None = None


class HeadSpec(Protocol):
    """A head description; ``build`` reads channels from the backbone's ``feature_info``.

    The built head maps the backbone's feature list to outputs. A head whose module has ``takes_targets = True``
    (teacher forcing) is called as ``head(features, targets)``, with ``targets=None`` at prediction time; one with
    ``takes_images = True`` (autoencoders) as ``head(features, images)``. A spec with a ``with_data(data)`` method
    is first completed from the recipe's data adapter spec (an image decoder takes its size, channels and
    normalisation from it) and the spec it returns is built.
    """

    task: ClassVar[Task]
    num_classes: int | None

    def build(self, feature_info: Sequence[FeatureInfo], *, num_classes: int) -> nn.Module: ...


class LossSpec(Protocol):
    """A loss description; the built module maps ``(outputs, targets)`` to named loss terms.

    A built loss with a ``set_progress(fraction)`` method is told, before each training batch, how far training
    is (0 at the start, 1 at the end of ``trainer.max_epochs``): for warm-ups such as a VAE's KL weight.
    """

    task: ClassVar[Task]

    def build(self) -> Callable[[Any, Any], dict[str, torch.Tensor]]: ...
