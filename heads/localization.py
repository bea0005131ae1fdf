"""Single-object localization (classification + one box), as in the lecture: one pooled feature, two outputs.

Outputs: ``{"logits": [N, C], "box": [N, 4]}`` with the box xyxy in 0..1 of the model input's width/height (so the
head needs no input size). Targets are detection targets (``zoo.data.detection``); the image's largest box is the
object. Images without a box take no part in the losses or metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchvision.ops import box_convert, generalized_box_iou_loss

from heads.detection import TRUTH, boxes_to_original, paired_box_iou
from zoo.backbones.base import FeatureInfo
from zoo.draw import as_rgb, draw_boxes, upscale
from zoo.recipe.spec import Range, spec
from zoo.task import Geometry, HeadContext, ImageGeometry, Task

__all__ = ["LocalizationHead", "Localizer", "LocalizationLoss", "LocalizationMetrics", "LOCALIZATION",
           "main_object"]


class LocalizationHead(nn.Module):
    """Global average pooling of the deepest map, a shared hidden layer, then class logits and a box.

    The box comes out as sigmoid (cx, cy, w, h) relative to the input, converted to xyxy.

    Args:
        in_channels: channels of the deepest feature map. num_classes: logits.
        hidden: width of the shared hidden layer (0: none).
    """

    def __init__(self, *, in_channels: int, num_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.shared = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(inplace=True)) if hidden else \
            nn.Identity()
        width = hidden or in_channels
        self.classify = nn.Linear(width, num_classes)
        self.regress = nn.Linear(width, 4)

    def forward(self, features: list[torch.Tensor], images: torch.Tensor | None = None, target: Any = None
                ) -> dict[str, torch.Tensor]:
        x = self.shared(self.pool(features[-1]))
        cxcywh = self.regress(x).float().sigmoid()
        return {"logits": self.classify(x), "box": box_convert(cxcywh, "cxcywh", "xyxy")}


def main_object(targets: Sequence[dict], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each image's largest box in 0..1 of the input (``[N, 4]`` xyxy), its label ``[N]``, and ``has_object [N]``."""
    boxes = torch.zeros(len(targets), 4, device=device)
    labels = torch.zeros(len(targets), dtype=torch.long, device=device)
    present = torch.zeros(len(targets), dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        if len(t["labels"]):
            b = t["boxes"].float()
            k = int(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).argmax())
            h, w = t["size"]
            boxes[i] = b[k].to(device) / torch.tensor([w, h, w, h], device=device, dtype=torch.float32)
            labels[i], present[i] = t["labels"][k], True
    return boxes, labels, present


class _LocalizationCriterion(nn.Module):
    def __init__(self, *, box_loss: str, box_weight: float) -> None:
        super().__init__()
        self.box_loss, self.box_weight = box_loss, box_weight

    def forward(self, outputs: dict[str, torch.Tensor], targets: Sequence[dict]) -> dict[str, torch.Tensor]:
        logits, box = outputs["logits"], outputs["box"]
        true_box, labels, present = main_object(targets, logits.device)
        if not present.any():  # a batch of background images: nothing to learn, a finite zero
            zero = (logits.sum() + box.sum()) * 0.0
            return {"cls": zero, "box": zero}
        logits, box, true_box, labels = logits[present], box[present], true_box[present], labels[present]
        if self.box_loss == "giou":
            term = generalized_box_iou_loss(box, true_box, reduction="mean")
        else:
            pred, true = box_convert(box, "xyxy", "cxcywh"), box_convert(true_box, "xyxy", "cxcywh")
            term = F.mse_loss(pred, true) if self.box_loss == "l2" else F.smooth_l1_loss(pred, true, beta=0.05)
        return {"cls": F.cross_entropy(logits, labels), "box": self.box_weight * term}


class LocalizationMetrics(nn.Module):
    """``acc`` (class), ``mean_iou`` (predicted vs true box), ``acc_iou50`` (right class and IoU ≥ 0.5)."""

    def __init__(self, classes: Sequence[str]) -> None:
        super().__init__()
        self.classes = list(classes)
        self.acc, self.mean_iou, self.acc_iou50 = MeanMetric(), MeanMetric(), MeanMetric()

    def update(self, outputs: dict[str, torch.Tensor], targets: Sequence[dict]) -> None:
        true_box, labels, present = main_object(targets, outputs["box"].device)
        if not present.any():
            return
        right = (outputs["logits"][present].argmax(1) == labels[present]).float()
        iou = paired_box_iou(outputs["box"][present].float(), true_box[present])
        self.acc.update(right)
        self.mean_iou.update(iou)
        self.acc_iou50.update(right * (iou >= 0.5).float())

    def compute(self) -> dict[str, float]:
        return {name: float(getattr(self, name).compute()) for name in ("acc", "mean_iou", "acc_iou50")}

    def reset(self) -> None:
        for m in (self.acc, self.mean_iou, self.acc_iou50):
            m.reset()

    def save_artifacts(self, out_dir: Path) -> list[Path]:
        return []


def predict_localization(outputs: dict[str, torch.Tensor], head: HeadContext, geometry: Geometry) -> list[dict]:
    """Per image ``{"class", "index", "prob", "box": [x1, y1, x2, y2]}``; the box in original-image pixels when
    ``geometry.image_sizes`` is given, else in model-input pixels."""
    classes = head.classes
    exported = export_localization(outputs, head, geometry)
    probs, boxes = exported["probs"].detach(), exported["box"].detach()
    results = []
    for i, (p, box) in enumerate(zip(probs, boxes)):
        if geometry.image_sizes is not None:
            box = boxes_to_original(box[None], input_size=geometry.input_size, image_size=geometry.image_sizes[i],
                                    resize=geometry.resize)[0]
        k = int(p.argmax())
        results.append({"class": classes[k], "index": k, "prob": round(float(p[k]), 6),
                        "box": [round(v, 2) for v in box.tolist()]})
    return results


def export_localization(outputs: dict[str, torch.Tensor], head: HeadContext, geometry: Geometry
                        ) -> dict[str, torch.Tensor]:
    """``logits``, ``probs`` ``[N, K]`` and ``box`` ``[N, 4]`` xyxy in model-input pixels."""
    h, w = geometry.input_size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=outputs["box"].device)
    logits = outputs["logits"]
    return {"logits": logits, "probs": logits.float().softmax(1), "box": outputs["box"].float() * scale}


def draw_localization(image: np.ndarray, prediction: dict, target: Any, classes: Sequence[str]) -> np.ndarray:
    """The predicted box labelled "class prob"; the true box in thin white when given."""
    picture, factor = upscale(as_rgb(image), min_side=192)
    if target is not None and len(target["labels"]):
        picture = draw_boxes(picture, target["boxes"].cpu().numpy().reshape(-1, 4) * factor,
                             [""] * len(target["labels"]), colors=TRUTH, width=1)
    box = np.asarray(prediction["box"], np.float32)[None] * factor
    return draw_boxes(picture, box, [f"{prediction['class']} {prediction['prob']:.2f}"], colors=[prediction["index"]])


def judge_localization(prediction: dict, target: Any, classes: Sequence[str]) -> tuple[str, float, str] | None:
    """1 - IoU of the predicted box with the true box of the predicted class it overlaps most (1 more when no true box
    has that class)."""
    if target is None or not len(target["labels"]):
        return None
    truth = target["boxes"].detach().cpu().float().reshape(-1, 4)
    box = torch.tensor([prediction["box"]], dtype=torch.float32).expand(len(truth), 4)
    same = target["labels"].detach().cpu() == prediction["index"]
    overlap = float(paired_box_iou(box, truth)[same].max()) if same.any() else 0.0
    note = f"IoU {overlap:.2f}" + ("" if same.any() else f", {prediction['class']} is not in the image")
    return "worst boxes", (1 - overlap) + (0 if same.any() else 1), note


def explain_localization(outputs: dict[str, torch.Tensor], k: int | None) -> tuple[torch.Tensor, int, float]:
    """The first image's class logit (default: the predicted class) and its probability."""
    from heads.classification import explain_class

    return explain_class(outputs["logits"], k)


LOCALIZATION = Task(name="localization", target="boxes", monitor="mean_iou", mode="max",
                    metrics=("acc", "mean_iou", "acc_iou50"), make_metrics=lambda head: LocalizationMetrics(head.classes),
                    predict=predict_localization, explain=explain_localization, draw=draw_localization,
                    export=export_localization, judge=judge_localization, shown=("mean_iou", "acc"),
                    legend="thin white box: the truth; coloured box: the prediction, labelled class and probability")


@spec
class Localizer:
    num_classes: Annotated[int, Range(ge=2)] | None = None  # None: the dataset's class count
    hidden: Annotated[int, Range(ge=0)] = 256  # width of the shared hidden layer (0: linear outputs)

    task: ClassVar[Task] = LOCALIZATION

    def build(self, feature_info: Sequence[FeatureInfo], *, num_classes: int,
              geometry: ImageGeometry | None = None) -> LocalizationHead:
        return LocalizationHead(in_channels=feature_info[-1].channels, num_classes=num_classes, hidden=self.hidden)


@spec
class LocalizationLoss:
    box_loss: Literal["l2", "huber", "giou"] = "giou"  # box regression loss (giou: torchvision.ops)
    box_weight: Annotated[float, Range(ge=0)] = 5.0  # weight of the box term against the cross-entropy

    task: ClassVar[Task] = LOCALIZATION

    def build(self, head: nn.Module | None = None) -> nn.Module:
        return _LocalizationCriterion(box_loss=self.box_loss, box_weight=self.box_weight)
