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

__all__ = ["Task", "TaskMetrics", "HeadSpec", "LossSpec"]


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


@dataclass(frozen=True)
class Task:
    """The hooks of one task.

    Attributes:
        name: shown to users ("classification").
        target: what the dataset adapter must yield next to each image ("label" for an int class id).
        monitor: the validation metric that picks ``best.ckpt`` and drives plateau schedules.
        mode: whether ``monitor`` improves upward ("max") or downward ("min").
        make_metrics: ``(classes) -> TaskMetrics``.
        predict: ``(outputs, classes, top_k) -> one JSON-able dict per image``.
        collate: batches ``(image, target)`` pairs; ``None`` for torch's default.
    """

    name: str
    target: str
    monitor: str
    mode: Literal["min", "max"]
    make_metrics: Callable[[Sequence[str]], nn.Module]
    predict: Callable[[Any, Sequence[str], int], list[dict]]
    collate: Callable[[list], Any] | None = None


class HeadSpec(Protocol):
    """A head description; ``build`` reads channels from the backbone's ``feature_info``."""

    task: ClassVar[Task]
    num_classes: int | None

    def build(self, feature_info: Sequence[FeatureInfo], *, num_classes: int) -> nn.Module: ...


class LossSpec(Protocol):
    """A loss description; the built module maps ``(outputs, targets)`` to named loss terms."""

    task: ClassVar[Task]

    def build(self) -> Callable[[Any, Any], dict[str, torch.Tensor]]: ...
