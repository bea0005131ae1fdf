"""Image classification: a pooled linear/MLP head, cross-entropy with label smoothing, top-k metrics.

Outputs are logits ``[N, num_classes]``; targets are class ids ``[N]`` (int64).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassPrecisionRecallCurve

from zoo.backbones.base import FeatureInfo
from zoo.errors import RecipeError
from zoo.recipe.spec import Range, spec
from zoo.draw import BLACK, GREEN, RED, as_rgb, text_below, upscale
from zoo.task import Geometry, HeadContext, ImageGeometry, Task

__all__ = ["ClassifierHead", "Classifier", "CrossEntropy", "ClassificationMetrics", "CLASSIFICATION"]


class ClassifierHead(nn.Module):
    """Global pooling of the deepest feature map, then an MLP (or one linear layer) with dropout.

    Args:
        in_channels: channels of the pooled map (``feature_info[-1].channels``).
        num_classes: output logits.
        hidden: widths of hidden layers (ReLU after each); ``()`` for a linear classifier.
        dropout: dropout probability before each linear layer.
        pool: "avg" or "max" global pooling.
    """

    def __init__(self, *, in_channels: int, num_classes: int, hidden: Sequence[int] = (), dropout: float = 0.0,
                 pool: str = "avg") -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1)
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels
        for h in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        layers += [nn.Dropout(dropout), nn.Linear(width, num_classes)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: list[torch.Tensor], images: torch.Tensor | None = None, target: Any = None
                ) -> torch.Tensor:
        return self.mlp(self.pool(features[-1]))  # [N, num_classes]


class ClassificationMetrics(nn.Module):
    """top-1, top-5 (top-k for fewer classes), per-class accuracy and a confusion matrix."""

    def __init__(self, classes: Sequence[str]) -> None:
        super().__init__()
        self.classes = list(classes)
        n = len(self.classes)
        self.top1 = MulticlassAccuracy(num_classes=n, top_k=1, average="micro")
        self.top5 = MulticlassAccuracy(num_classes=n, top_k=min(5, n), average="micro")
        self.per_class = MulticlassAccuracy(num_classes=n, average="none")
        self.confusion = MulticlassConfusionMatrix(num_classes=n)
        self.pr = MulticlassPrecisionRecallCurve(num_classes=n, thresholds=101)  # binned: fixed memory, DDP-summed
        self._last_confusion: torch.Tensor | None = None
        self._last_pr: list[torch.Tensor] = []

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        for m in (self.top1, self.top5, self.per_class, self.confusion, self.pr):
            m.update(outputs, targets)

    def compute(self) -> dict[str, float]:
        """top1, top5 and ``acc/<class>`` for each class present in the evaluated targets.

        A class without any target sample has no accuracy (0 of 0 is not 0.0): its ``acc/<class>`` key is omitted.
        """
        result = {"top1": self.top1.compute().item(), "top5": self.top5.compute().item()}
        self._last_confusion = self.confusion.compute().cpu()
        self._last_pr = [t.cpu() for t in self.pr.compute()[:2]]  # precision, recall [K, thresholds + 1]
        support = self._last_confusion.sum(dim=1).tolist()  # [K] samples per true class
        for name, acc, n in zip(self.classes, self.per_class.compute().tolist(), support):
            if n > 0:
                result[f"acc/{name}"] = acc
        return result

    def reset(self) -> None:
        for m in (self.top1, self.top5, self.per_class, self.confusion, self.pr):
            m.reset()

    def save_artifacts(self, out_dir: Path) -> list[Path]:
        """``confusion_matrix.png`` (counts, and rows normalised to the share of each true class) and
        ``pr_curves.png`` (precision against recall per class, one class against the rest)."""
        if self._last_confusion is None:
            return []
        from matplotlib.figure import Figure

        cm = self._last_confusion.numpy()
        n = len(self.classes)
        side = 1.5 + 0.45 * n
        fig = Figure(figsize=(2 * side + 1, side + 0.5), layout="constrained")
        support = cm.sum(axis=1, keepdims=True)
        shares = np.divide(cm, support, out=np.zeros_like(cm, dtype=float), where=support > 0)
        for ax, values, title, fmt in zip(fig.subplots(1, 2), (cm, shares), ("counts", "share of each true class"),
                                          ("{:.0f}", "{:.2f}")):
            ax.imshow(values, cmap="Blues", vmin=0)
            ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=f"confusion: {title}")
            ax.set_xticklabels(self.classes, rotation=90)
            ax.set_yticklabels(self.classes)
            if n <= 30:
                top = values.max() or 1
                for i in range(n):
                    for j in range(n):
                        if values[i, j]:  # zeros left blank, so the mistakes stand out
                            ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=7,
                                    color="white" if values[i, j] > top / 2 else "black")
        written = [Path(out_dir) / "confusion_matrix.png"]
        fig.savefig(written[0], dpi=100, bbox_inches="tight")
        precision, recall = self._last_pr
        fig = Figure(figsize=(6, 4.5), layout="constrained")
        ax = fig.subplots()
        for name, p, r in zip(self.classes, precision, recall):
            keep = ~p.isnan()  # thresholds above every score have no precision
            ax.plot(r[keep].numpy(), p[keep].numpy(), lw=1, label=name)
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="precision-recall per class")
        ax.grid(True, alpha=0.3)
        if n <= 20:
            ax.legend(fontsize=7, ncol=2)
        written.append(Path(out_dir) / "pr_curves.png")
        fig.savefig(written[1], dpi=100)
        return written


def predict_topk(outputs: torch.Tensor, head: HeadContext, geometry: Geometry) -> list[dict]:
    """Logits ``[N, K]`` → per image ``{"top_k": [{"class", "index", "prob"}, ...]}``, best first (``top_k`` of the
    head spec, default 5)."""
    classes = head.classes
    probs = export_probabilities(outputs, head, geometry)["probs"]
    p, idx = probs.topk(min(getattr(head.spec, "top_k", 5), probs.shape[1]), dim=1)
    return [{"top_k": [{"class": classes[i], "index": i, "prob": round(q, 6)} for q, i in zip(pr.tolist(), ix.tolist())]}
            for pr, ix in zip(p, idx)]


def draw_class(image: np.ndarray, prediction: dict, target: Any, classes: Sequence[str]) -> np.ndarray:
    """The image with the top-k classes and their probabilities beneath, best first (the best in green when it matches
    ``target``, else red)."""
    ranked = prediction["top_k"]
    picture, _ = upscale(as_rgb(image))
    lines = [f"{i + 1}. {c['class']} {c['prob']:.2f}" if len(ranked) > 1 else f"{c['class']} {c['prob']:.2f}"
             for i, c in enumerate(ranked)]
    colors = [BLACK] * len(lines)
    if target is not None:
        truth = int(target)
        colors[0] = GREEN if ranked[0]["index"] == truth else RED
        lines.append(f"true: {classes[truth]}")
        colors.append(BLACK)
    return text_below(picture, lines, colors)


def judge_class(prediction: dict, target: Any, classes: Sequence[str]) -> tuple[str, float, str]:
    """Wrong predictions ranked by their confidence, right ones by the lack of it."""
    best, truth = prediction["top_k"][0], int(target)
    if best["index"] != truth:
        return "confidently wrong", best["prob"], f"{best['class']} {best['prob']:.2f}, true {classes[truth]}"
    return "least sure right", 1 - best["prob"], f"{best['class']} {best['prob']:.2f}"


def explain_class(outputs: torch.Tensor, k: int | None) -> tuple[torch.Tensor, int, float]:
    """The first image's logit of class ``k`` (default: the predicted class) and its probability."""
    logits = outputs[0]
    k = int(logits.argmax()) if k is None else k
    return logits[k], k, float(logits.detach().float().softmax(0)[k])


def export_probabilities(outputs: torch.Tensor, head: HeadContext, geometry: Geometry) -> dict[str, torch.Tensor]:
    """The exported graph's outputs: ``logits`` and ``probs`` (softmax), both ``[N, K]``."""
    return {"logits": outputs, "probs": outputs.float().softmax(dim=1)}


def average_probabilities(outputs: list[torch.Tensor]) -> torch.Tensor:
    """Several models' logits ``[N, K, ...]`` → the log of their mean class probabilities (softmax over dim 1), which
    decodes, scores and exports as logits do (softmax of it is the mean)."""
    return torch.stack([o.float().softmax(dim=1) for o in outputs]).mean(dim=0).log()


CLASSIFICATION = Task(name="classification", target="label", monitor="top1", mode="max", metrics=("top1", "top5"),
                      judge=judge_class, shown=("top1",),
                      legend="beneath each image: the top classes with probabilities, the best in green when right and "
                             "red when wrong; 'true:' the label",
                      per_class="acc", make_metrics=lambda head: ClassificationMetrics(head.classes),
                      predict=predict_topk, explain=explain_class, draw=draw_class, export=export_probabilities,
                      combine=average_probabilities, unflip=lambda outputs, width: outputs)


@spec
class Classifier:
    num_classes: Annotated[int, Range(ge=2)] | None = None  # None: the dataset's class count
    hidden: tuple[int, ...] = ()  # hidden layer widths of the MLP; () for a linear classifier
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0  # dropout before each linear layer
    pool: Literal["avg", "max"] = "avg"  # global pooling of the deepest feature map
    top_k: Annotated[int, Range(ge=1)] = 5  # predict: classes listed per image, best first

    task: ClassVar[Task] = CLASSIFICATION

    def build(self, feature_info: Sequence[FeatureInfo], *, num_classes: int,
              geometry: ImageGeometry | None = None) -> ClassifierHead:
        return ClassifierHead(in_channels=feature_info[-1].channels, num_classes=num_classes, hidden=self.hidden,
                              dropout=self.dropout, pool=self.pool)


class _CrossEntropyLoss(nn.Module):
    """Cross-entropy against class ids, or against soft targets ``[N, K]`` (what :meth:`mix` makes in training).

    ``mixup`` is a ``timm.data.Mixup`` (or ``None``): :meth:`mix` mixes pairs of a training batch's images and their
    one-hot (smoothed) labels; the engine calls it in training steps only.
    """

    def __init__(self, label_smoothing: float, mixup: Any = None) -> None:
        super().__init__()
        self.label_smoothing, self.mixup = label_smoothing, mixup

    def mix(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mixup is None or len(images) % 2:  # timm's batch mixing pairs images: an odd batch stays unmixed
            return images, targets
        return self.mixup(images, targets)

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        if targets.is_floating_point():  # soft targets (mixup / CutMix), already smoothed
            return {"ce": torch.sum(-targets * F.log_softmax(outputs.float(), dim=-1), dim=-1).mean()}
        return {"ce": F.cross_entropy(outputs, targets, label_smoothing=self.label_smoothing)}


@spec
class CrossEntropy:
    label_smoothing: Annotated[float, Range(ge=0, lt=1)] = 0.0  # mass spread evenly over all classes
    mixup_alpha: Annotated[float, Range(ge=0)] = 0.0  # mixup (Zhang et al.): Beta(a, a) mixing of image pairs; 0: off
    cutmix_alpha: Annotated[float, Range(ge=0)] = 0.0  # CutMix (Yun et al.): pasted boxes, Beta(a, a) area; 0: off
    mix_prob: Annotated[float, Range(ge=0, le=1)] = 1.0  # share of training batches mixed (timm.data.Mixup prob)
    switch_prob: Annotated[float, Range(ge=0, le=1)] = 0.5  # with both on: chance a batch uses CutMix, not mixup

    task: ClassVar[Task] = CLASSIFICATION

    @property
    def mixes_batches(self) -> bool:
        """Whether the built loss mixes training batches (``LossSpec`` capability; single-head models only)."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def build(self, head: nn.Module | None = None) -> nn.Module:
        mixup = None
        if self.mixup_alpha > 0 or self.cutmix_alpha > 0:
            from timm.data import Mixup

            if head is None:
                raise RecipeError("loss", "mixup / CutMix need the built head (its class count)")
            mixup = Mixup(mixup_alpha=self.mixup_alpha, cutmix_alpha=self.cutmix_alpha, prob=self.mix_prob,
                          switch_prob=self.switch_prob, label_smoothing=self.label_smoothing,
                          num_classes=head.mlp[-1].out_features)
        return _CrossEntropyLoss(self.label_smoothing, mixup)
