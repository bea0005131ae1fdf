"""What a task plugs into the engine: a head, a loss, metrics and the target kind its head learns from.

The engine only ever talks to these protocols; it never branches on a task's name. A new task is a module in
``heads/`` that defines a :class:`Task` and the specs that point to it (and, if it learns from a new kind of
label, a :class:`zoo.data.targets.TargetKind`). ``docs/new_task.md`` shows the smallest complete example.

The contract of a built head (what ``HeadSpec.build`` returns):

- ``forward(features, images, target=None)`` → a tensor or a dict of named tensors, nothing else. ``features``
  are the backbone's (or neck's) maps, ``images`` the normalised model input ``[N, C, H, W]`` (image decoders
  measure against it), ``target`` the head's own collated target during training and evaluation (teacher forcing
  reads it) and ``None`` at prediction time. The result does not depend on ``self.training`` beyond dropout,
  BatchNorm and a VAE's sampling noise, so the graph can be exported.
- Decoding (argmax, NMS, beam search, mapping back to the original image) is ``Task.predict``, outside the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import nn

from zoo.backbones.base import FeatureInfo

__all__ = ["Task", "TaskMetrics", "HeadSpec", "LossSpec", "HeadContext", "Geometry", "ImageGeometry", "check_level"]


class TaskMetrics(Protocol):
    """Accumulates a task's metrics over batches (an ``nn.Module`` so it follows the model's device)."""

    def update(self, outputs: Any, targets: Any) -> None: ...

    def compute(self) -> dict[str, float]:
        """Flat ``name → number``; the names are what ``zoo eval --json`` writes (prefixed by the head's name in a
        multi-head model)."""
        ...

    def reset(self) -> None: ...

    def save_artifacts(self, out_dir: Path) -> list[Path]:
        """Pictures of the last ``compute`` (confusion matrices, curves); returns the written files."""
        ...


@dataclass(frozen=True)
class ImageGeometry:
    """What an image decoder takes from the data adapter: output side, channels, and the input normalisation."""

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @staticmethod
    def of(data: Any) -> ImageGeometry:
        return ImageGeometry(size=data.image_size, channels=data.channels, mean=tuple(data.mean), std=tuple(data.std))

    def unnormalise(self, images: torch.Tensor) -> torch.Tensor:
        """Model inputs ``[N, C, H, W]`` (normalised) → pixels in [0, 1]."""
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).reshape(shape)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).reshape(shape)
        return (images * std + mean).clamp(0, 1)


@dataclass(frozen=True, kw_only=True)
class Geometry:
    """Where the model inputs of a batch came from, for mapping predictions back to the images.

    Attributes:
        input_size: ``(H, W)`` of the model input the outputs refer to.
        image_sizes: ``(H, W)`` of each original image (``None``: keep input coordinates, as for the evaluation
            pictures drawn on the model inputs).
        resize: how images were fitted to ``input_size`` ("stretch" or "letterbox", see ``Augment.resize``).
    """

    input_size: tuple[int, int]
    image_sizes: Sequence[tuple[int, int]] | None = None
    resize: str = "stretch"


@dataclass(frozen=True)
class HeadContext:
    """One built head as its task's hooks see it: its recipe name, its spec (predict options such as
    ``score_threshold`` or ``top_k`` are spec fields), the built module, and the classes of its target."""

    name: str
    spec: Any
    module: nn.Module
    classes: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    """The hooks of one task.

    Attributes:
        name: shown to users ("classification").
        target: the target key the head learns from (a kind of ``zoo.data.targets``: "label", "boxes", "mask",
            "caption", or "image" — the image itself, which every adapter yields).
        monitor: the default validation metric that picks ``best.ckpt`` and drives plateau schedules.
        mode: whether higher ("max") or lower ("min") metrics are better (every declared metric shares it).
        metrics: the metric names ``make_metrics`` always reports (per-class names like ``acc/<class>`` come on
            top); ``trainer.monitor`` is checked against them before any data is read.
        make_metrics: ``(HeadContext) -> TaskMetrics``.
        per_class: the prefix of per-class metrics (``acc`` for ``acc/<class>``), ``None`` if the task has none.
        predict: ``(outputs, HeadContext, Geometry) -> one JSON-able dict per image``.
        explain: ``(outputs of one image, class index or None) -> (score, class index, probability)``: the scalar
            whose gradient ``zoo viz`` (saliency, guided backprop, Grad-CAM) explains, for the given class or, with
            ``None``, the best predicted one; ``None`` for tasks without a class score.
        draw: ``(image uint8 [H, W, C], prediction, target or None, classes) -> uint8 [h, w, 3]``: one picture of a
            prediction (next to the truth when given), for ``zoo predict --out`` and the evaluation grid.
        save_predictions: ``(results, classes, out_dir) -> written files``: task formats that ``zoo predict --out``
            writes next to ``predictions.json`` (COCO results for detection).
        export: ``(outputs, HeadContext, Geometry) -> {name: tensor}``: the head's outputs as the tensors an exported
            graph returns (``zoo export``): torch operations only, no control flow on values, so that tracing records
            them (probabilities, decoded boxes after NMS, greedy caption tokens); coordinates in model-input pixels.
            ``None``: the task cannot be exported, and ``zoo export`` says so.
        combine: ``(list of outputs of several models on the same batch) -> outputs``: an ensemble's outputs, which
            ``predict``, ``make_metrics`` and ``export`` take as one model's (``zoo eval A.ckpt B.ckpt``). ``None``:
            the task refuses ensembles.
        unflip: ``(outputs of a horizontally flipped batch, input width) -> outputs of the batch itself``: flipped
            boxes and masks mapped back exactly, for test-time augmentation (``--tta hflip``: the two views are then
            combined by ``combine``). ``None``: the task refuses flip TTA.
        judge: ``(prediction, target, classes) -> (group, badness, note)`` or ``None``: how wrong one evaluated
            prediction is, for the worst examples of the run report (``worst_<group>.png``): per group, the examples
            with the highest badness are shown with ``note`` beneath (classification: "wrong" ranked by confidence,
            "least sure right" by the lack of it; detection: missed plus false boxes). ``None`` as a result: nothing
            wrong with this one.
        legend: what the drawn pictures' marks mean, written beneath every evaluation picture.
        shown: the metrics the per-epoch line prints besides the losses and the monitored one (the rest stays in
            the logs); empty: the monitored metric only.
    """

    name: str
    target: str
    monitor: str
    mode: Literal["min", "max"]
    metrics: tuple[str, ...]
    make_metrics: Callable[[HeadContext], nn.Module]
    predict: Callable[[Any, HeadContext, Geometry], list[dict]]
    per_class: str | None = None
    explain: Callable[[Any, int | None], tuple[torch.Tensor, int, float]] | None = None
    draw: Callable[..., Any] | None = None
    save_predictions: Callable[[list[dict], Sequence[str], Path], list[Path]] | None = None
    export: Callable[[Any, HeadContext, Geometry], dict[str, torch.Tensor]] | None = None
    combine: Callable[[list[Any]], Any] | None = None
    unflip: Callable[[Any, int], Any] | None = None
    judge: Callable[[dict, Any, Sequence[str]], tuple[str, float, str] | None] | None = None
    legend: str = ""
    shown: tuple[str, ...] = ()


class HeadSpec(Protocol):
    """A head description. Every head is built the same way: channels from the backbone's (or neck's)
    ``feature_info``, ``num_classes`` from its own target's classes (0 for the image target), ``geometry`` from the
    data adapter (image decoders take their size, channels and normalisation from it)."""

    task: ClassVar[Task]
    num_classes: int | None

    def build(self, feature_info: Sequence[FeatureInfo], *, num_classes: int, geometry: ImageGeometry) -> nn.Module: ...


class LossSpec(Protocol):
    """A loss description; the built module maps ``(outputs, targets)`` of its head to named loss terms.

    ``build`` gets the built head (a VAE's likelihood settings live there). A built loss with a
    ``set_progress(fraction)`` method is told, before each training batch, how far training is (0 at the start,
    1 at the end of ``trainer.max_epochs``): for warm-ups such as a VAE's KL weight. A built loss with a
    ``mix(images, target) -> (images, target)`` method transforms each training batch before the forward pass
    (mixup / CutMix); its spec then says so with a ``mixes_batches`` property, and models with named heads refuse it
    (mixing images changes what every head sees).
    """

    task: ClassVar[Task]

    def build(self, head: nn.Module) -> Callable[[Any, Any], dict[str, torch.Tensor]]: ...


def check_level(feature_info: Sequence[FeatureInfo], level: int, field: str = "level") -> FeatureInfo:
    """The feature map a head reads (``level`` indexes ``feature_info``; -1 is the deepest), or a ``RecipeError``
    naming ``field`` (the engine prefixes the head's path) with the valid range and the maps' strides."""
    from zoo.errors import RecipeError

    if not -len(feature_info) <= level < len(feature_info):
        raise RecipeError(field, f"{level} is out of range; the backbone has {len(feature_info)} feature maps "
                                 f"(strides {[f.stride for f in feature_info]}), so -{len(feature_info)}.."
                                 f"{len(feature_info) - 1}")
    return feature_info[level]
