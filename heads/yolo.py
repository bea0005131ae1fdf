"""A modern YOLO-style detector head: PAN neck, anchor-free decoupled head, task-aligned assignment, CIoU loss.

Blocks (``ConvBNAct``, ``CSPBlock``) → ``PanNeck`` (FPN top-down + PAN bottom-up over the backbone's deepest
levels, channels read from ``feature_info``) → ``DecoupledHead`` (per level: a classification branch and a box
branch) → ``YoloDetector`` (neck + head + decoding to boxes) → the spec ``Yolo`` with sizes nano/small/medium/large
(width and depth multipliers) → the loss: ``TaskAlignedAssigner`` + ``YoloCriterion`` → the spec ``YoloLoss``.

Boxes are predicted as distances (left, top, right, bottom) from each anchor point (the centre of a feature-map
cell), in units of the level's stride; outputs follow ``heads.detection`` (``boxes`` xyxy input pixels,
``scores`` sigmoid class scores) so the shared decoder, metrics and prediction apply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import complete_box_iou_loss, generalized_box_iou_loss

from heads.detection import DETECTION, DetectorOptions
from zoo.backbones.base import FeatureInfo
from zoo.recipe.spec import Range, spec
from zoo.task import ImageGeometry, Task

__all__ = ["ConvBNAct", "CSPBlock", "PanNeck", "SharedPanNeck", "PanNeckSpec", "DecoupledHead", "YoloDetector", "Yolo",
           "SIZES",
           "TaskAlignedAssigner", "YoloCriterion", "YoloLoss", "anchor_points"]

# size → (depth multiplier, width multiplier), as in YOLOv8/YOLO11: blocks = round(3 * depth), widths x width.
SIZES: dict[str, tuple[float, float]] = {"nano": (0.33, 0.25), "small": (0.33, 0.5), "medium": (0.67, 0.75),
                                         "large": (1.0, 1.0)}
_BASE_WIDTHS = (256, 512, 1024)  # neck channels of the three deepest levels at width 1.0 (shallow → deep)
_PRIOR_PROB = 0.01  # initial class score: keeps the classification loss of the many background points small


class ConvBNAct(nn.Sequential):
    """Conv → BatchNorm → SiLU."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.SiLU(inplace=True))


class _Bottleneck(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBNAct(c, c, 3), ConvBNAct(c, c, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class CSPBlock(nn.Module):
    """A C2f-style cross-stage block: split in two, ``n`` bottlenecks on one half, concatenate every stage, fuse."""

    def __init__(self, c_in: int, c_out: int, n: int = 1) -> None:
        super().__init__()
        self.hidden = max(8, c_out // 2)
        self.split = ConvBNAct(c_in, 2 * self.hidden)
        self.blocks = nn.ModuleList(_Bottleneck(self.hidden) for _ in range(n))
        self.fuse = ConvBNAct((2 + n) * self.hidden, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.split(x).chunk(2, dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.fuse(torch.cat(parts, dim=1))


def _resize_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``x`` resampled to ``ref``'s spatial size (levels of equal stride, or valid-padded backbones)."""
    return x if x.shape[-2:] == ref.shape[-2:] else F.interpolate(x, size=ref.shape[-2:], mode="nearest")


class PanNeck(nn.Module):
    """FPN top-down then PAN bottom-up fusion of several backbone levels.

    Args:
        in_channels: channels of the used backbone levels, shallow → deep (from ``feature_info``).
        widths: output channels per level, shallow → deep.
        depth: bottlenecks per ``CSPBlock``.
    """

    def __init__(self, *, in_channels: Sequence[int], widths: Sequence[int], depth: int) -> None:
        super().__init__()
        n = len(in_channels)
        self.lateral = nn.ModuleList(ConvBNAct(c, w) for c, w in zip(in_channels, widths))
        # top-down: level i fuses itself with the (upsampled) level i + 1
        self.top_down = nn.ModuleList(CSPBlock(widths[i] + widths[i + 1], widths[i], depth) for i in range(n - 1))
        # bottom-up: level i + 1 fuses itself with the (downsampled) level i
        self.down = nn.ModuleList(ConvBNAct(widths[i], widths[i], 3, 2) for i in range(n - 1))
        self.bottom_up = nn.ModuleList(CSPBlock(widths[i] + widths[i + 1], widths[i + 1], depth) for i in range(n - 1))

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        x = [lat(f) for lat, f in zip(self.lateral, features)]
        for i in range(len(x) - 2, -1, -1):
            x[i] = self.top_down[i](torch.cat([x[i], _resize_to(x[i + 1], x[i])], dim=1))
        for i in range(len(x) - 1):
            x[i + 1] = self.bottom_up[i](torch.cat([_resize_to(self.down[i](x[i]), x[i + 1]), x[i + 1]], dim=1))
        return x


class DecoupledHead(nn.Module):
    """Per level, separate classification and box branches (two 3x3 convs each, then a 1x1 output conv).

    Outputs per level: class logits ``[N, C, H, W]`` and raw distances ``[N, 4, H, W]``.
    """

    def __init__(self, *, widths: Sequence[int], num_classes: int) -> None:
        super().__init__()
        hidden = max(widths[0], min(num_classes, 100))
        self.cls = nn.ModuleList(nn.Sequential(ConvBNAct(w, hidden, 3), ConvBNAct(hidden, hidden, 3),
                                               nn.Conv2d(hidden, num_classes, 1)) for w in widths)
        self.box = nn.ModuleList(nn.Sequential(ConvBNAct(w, hidden, 3), ConvBNAct(hidden, hidden, 3),
                                               nn.Conv2d(hidden, 4, 1)) for w in widths)
        for branch in self.cls:
            nn.init.constant_(branch[-1].bias, -math.log((1 - _PRIOR_PROB) / _PRIOR_PROB))
        for branch in self.box:  # softplus(1.3) ≈ 1.5: first boxes about three strides wide
            nn.init.constant_(branch[-1].bias, 1.3)

    def forward(self, features: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(c(f), b(f)) for c, b, f in zip(self.cls, self.box, features)]


def anchor_points(shapes: Sequence[tuple[int, int]], strides: Sequence[int], *, device: torch.device | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres of every level, row-major, in input pixels: ``points [A, 2]`` (x, y) and ``strides [A]``."""
    points, per_point = [], []
    for (h, w), s in zip(shapes, strides):
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        points.append((torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * s)
        per_point.append(torch.full((h * w,), float(s), device=device))
    return torch.cat(points), torch.cat(per_point)


class YoloDetector(nn.Module):
    """Neck + decoupled head over the deepest ``len(strides)`` backbone levels, decoded to boxes.

    ``forward(features)`` returns (``A`` = anchor points over all levels)::

        "cls_logits": [N, A, C]   "scores": [N, A, C] sigmoid of the logits
        "boxes":      [N, A, 4]   xyxy input pixels    "points": [A, 2] (x, y) pixels    "strides": [A]
    """

    def __init__(self, *, in_channels: Sequence[int], strides: Sequence[int], widths: Sequence[int], depth: int,
                 num_classes: int) -> None:
        super().__init__()
        self.strides = list(strides)
        self.neck = PanNeck(in_channels=in_channels, widths=widths, depth=depth)
        self.head = DecoupledHead(widths=widths, num_classes=num_classes)

    def forward(self, features: list[torch.Tensor], images: torch.Tensor | None = None, target: Any = None
                ) -> dict[str, torch.Tensor]:
        used = self.neck(features[-len(self.strides):])
        outs = self.head(used)
        shapes = [tuple(f.shape[-2:]) for f in used]
        points, strides = anchor_points(shapes, self.strides, device=used[0].device)
        cls = torch.cat([c.flatten(2) for c, _ in outs], dim=2).transpose(1, 2)  # [N, A, C]
        dist = torch.cat([b.flatten(2) for _, b in outs], dim=2).transpose(1, 2)  # [N, A, 4] ltrb, stride units
        dist = F.softplus(dist.float()) * strides[:, None]
        boxes = torch.cat([points - dist[..., :2], points + dist[..., 2:]], dim=-1)
        return {"cls_logits": cls, "scores": cls.sigmoid(), "boxes": boxes, "points": points, "strides": strides}


def _neck_widths(used: Sequence[FeatureInfo], size: str) -> tuple[list[int], int]:
    """Neck channels per used level (shallow → deep) and bottlenecks per block, for a ``SIZES`` name."""
    depth, width = SIZES[size]
    base = _BASE_WIDTHS[-len(used):] if len(used) <= len(_BASE_WIDTHS) else \
        (_BASE_WIDTHS[0],) * (len(used) - len(_BASE_WIDTHS)) + _BASE_WIDTHS
    return [max(16, int(round(b * width / 8)) * 8) for b in base], max(1, round(3 * depth))


@spec
class Yolo(DetectorOptions):
    num_classes: Annotated[int, Range(ge=1)] | None = None  # None: the dataset's class count
    size: Literal["nano", "small", "medium", "large"] = "nano"  # width/depth multipliers (SIZES)
    levels: Annotated[int, Range(ge=1)] = 3  # how many of the backbone's deepest feature maps detect (fewer if absent)

    task: ClassVar[Task] = DETECTION

    def build(self, feature_info: Sequence[FeatureInfo], *, num_classes: int,
              geometry: ImageGeometry | None = None) -> YoloDetector:
        used = list(feature_info)[-self.levels:]
        widths, depth = _neck_widths(used, self.size)
        return YoloDetector(in_channels=[f.channels for f in used], strides=[f.stride for f in used], widths=widths,
                            depth=depth, num_classes=num_classes)


class SharedPanNeck(nn.Module):
    """A :class:`PanNeck` between the backbone and every head: the deepest ``levels`` maps fused, the shallower
    ones passed through unchanged (so a U-Net decoder still finds its fine maps). ``feature_info`` describes the
    output maps, as a backbone's does."""

    def __init__(self, feature_info: Sequence[FeatureInfo], *, levels: int, size: str) -> None:
        super().__init__()
        used = list(feature_info)[-levels:]
        self.passed = len(feature_info) - len(used)
        widths, depth = _neck_widths(used, size)
        self.pan = PanNeck(in_channels=[f.channels for f in used], widths=widths, depth=depth)
        self.feature_info = [*feature_info[:self.passed],
                             *(FeatureInfo(channels=w, stride=f.stride, module=f"neck.{i}")
                               for i, (w, f) in enumerate(zip(widths, used)))]

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [*features[:self.passed], *self.pan(features[self.passed:])]


@spec
class PanNeckSpec:
    """The YOLO PAN neck as a neck shared by all heads: ``backbone | PanNeckSpec() | {"det": ..., "seg": ...}``."""

    size: Literal["nano", "small", "medium", "large"] = "nano"  # width/depth multipliers (SIZES)
    levels: Annotated[int, Range(ge=2)] = 3  # the backbone's deepest maps fused (fewer if absent)

    def build_neck(self, feature_info: Sequence[FeatureInfo]) -> SharedPanNeck:
        return SharedPanNeck(feature_info, levels=min(self.levels, len(feature_info)), size=self.size)


# --- assignment and loss -----------------------------------------------------------------------------------------

def _pad_targets(targets: Sequence[dict], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image boxes/labels padded to the batch's most objects: ``[N, K, 4]``, ``[N, K]``, valid ``[N, K]``."""
    k = max([len(t["labels"]) for t in targets] + [1])
    boxes = torch.zeros(len(targets), k, 4, device=device)
    labels = torch.zeros(len(targets), k, dtype=torch.long, device=device)
    valid = torch.zeros(len(targets), k, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        m = len(t["labels"])
        boxes[i, :m], labels[i, :m], valid[i, :m] = t["boxes"].to(device).float(), t["labels"].to(device), True
    return boxes, labels, valid


def _pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of ``a [N, K, 4]`` with ``b [N, A, 4]`` (xyxy) → ``[N, K, A]``."""
    a, b = a[:, :, None], b[:, None]
    lt, rb = torch.maximum(a[..., :2], b[..., :2]), torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a + area_b - inter).clamp(min=1e-9)


class TaskAlignedAssigner(nn.Module):
    """TOOD's task-aligned assignment: an anchor point fits an object by ``score^alpha * IoU^beta``.

    Each object takes the ``topk`` best-aligned points whose centres lie inside its box (the nearest point when
    none does, so tiny objects are never lost); a point claimed by several objects goes to the one it overlaps most.
    The classification target of a positive point is its alignment, rescaled so each object's best point gets that
    object's best IoU: the score learns to predict localisation quality (IoU-aware).
    """

    def __init__(self, *, topk: int = 10, alpha: float = 1.0, beta: float = 6.0) -> None:
        super().__init__()
        self.topk, self.alpha, self.beta = topk, alpha, beta

    @torch.no_grad()
    def forward(self, scores: torch.Tensor, boxes: torch.Tensor, points: torch.Tensor, gt_boxes: torch.Tensor,
                gt_labels: torch.Tensor, gt_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Args: predicted ``scores [N, A, C]``, ``boxes [N, A, 4]``; ``points [A, 2]``; padded truth
        ``[N, K, 4]``, ``[N, K]``, ``[N, K]``.

        Returns:
            ``target_boxes [N, A, 4]``, ``target_scores [N, A, C]`` (0 for background points) and ``fg [N, A]``.
        """
        n, a, c = scores.shape
        lt = points[None, None] - gt_boxes[:, :, None, :2]  # [N, K, A, 2]
        rb = gt_boxes[:, :, None, 2:] - points[None, None]
        inside = torch.cat([lt, rb], -1).amin(-1) > 0  # [N, K, A]
        centres = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2  # [N, K, 2]
        nearest = torch.cdist(centres, points[None].expand(n, -1, -1)).argmin(-1)  # [N, K]
        lonely = ~inside.any(-1)
        inside |= F.one_hot(nearest, a).bool() & lonely[..., None]
        inside &= gt_valid[..., None]

        iou = _pairwise_iou(gt_boxes, boxes)  # [N, K, A]
        cls_score = scores.transpose(1, 2).gather(1, gt_labels[..., None].expand(-1, -1, a))  # [N, K, A]
        align = cls_score.pow(self.alpha) * iou.pow(self.beta) * inside
        # ranks inside points above outside ones even where every alignment is 0 (no overlap yet)
        top = (align + 1e-12 * inside).topk(min(self.topk, a), dim=-1).indices  # [N, K, topk]
        chosen = torch.zeros_like(inside).scatter_(-1, top, True) & inside
        claimed = chosen.sum(1, keepdim=True) > 1  # [N, 1, A] points claimed by several objects
        best = F.one_hot((iou * inside).argmax(1), chosen.shape[1]).transpose(1, 2).bool()  # [N, K, A]
        chosen = torch.where(claimed, best & inside, chosen)

        fg = chosen.any(1)  # [N, A]
        owner = chosen.float().argmax(1)  # [N, A] index of the assigned object
        align = align * chosen
        norm = align * (iou * chosen).amax(-1, keepdim=True) / (align.amax(-1, keepdim=True) + 1e-9)
        quality = norm.amax(1)  # [N, A]
        labels = gt_labels.gather(1, owner)
        target_boxes = gt_boxes.gather(1, owner[..., None].expand(-1, -1, 4))
        target_scores = F.one_hot(labels, c).float() * (quality * fg)[..., None]
        return target_boxes, target_scores, fg


class YoloCriterion(nn.Module):
    """Binary cross-entropy on IoU-aware class targets + an IoU-family box loss on the positive points.

    Both terms are normalised by the sum of the class targets (TOOD / YOLOv8), so an image without objects gives a
    finite, pure-background classification loss.
    """

    def __init__(self, *, assigner: TaskAlignedAssigner, box_loss: str, box_weight: float, cls_weight: float) -> None:
        super().__init__()
        self.assigner = assigner
        self.box_loss = complete_box_iou_loss if box_loss == "ciou" else generalized_box_iou_loss
        self.box_weight, self.cls_weight = box_weight, cls_weight

    def forward(self, outputs: dict[str, torch.Tensor], targets: Sequence[dict]) -> dict[str, torch.Tensor]:
        logits, boxes = outputs["cls_logits"].float(), outputs["boxes"].float()
        gt_boxes, gt_labels, gt_valid = _pad_targets(targets, logits.device)
        target_boxes, target_scores, fg = self.assigner(logits.detach().sigmoid(), boxes.detach(), outputs["points"],
                                                        gt_boxes, gt_labels, gt_valid)
        norm = target_scores.sum().clamp(min=1.0)
        cls = F.binary_cross_entropy_with_logits(logits, target_scores, reduction="sum") / norm
        if fg.any():
            weight = target_scores.sum(-1)[fg]
            box = (self.box_loss(boxes[fg], target_boxes[fg], reduction="none") * weight).sum() / norm
        else:
            box = boxes.sum() * 0.0  # keeps the graph (DDP) with no positive point in the batch
        return {"cls": self.cls_weight * cls, "box": self.box_weight * box}


@spec
class YoloLoss:
    box_loss: Literal["ciou", "giou"] = "ciou"  # IoU-family box loss (torchvision.ops)
    box_weight: Annotated[float, Range(ge=0)] = 5.0  # weight of the box term
    cls_weight: Annotated[float, Range(ge=0)] = 1.0  # weight of the classification term
    topk: Annotated[int, Range(ge=1)] = 10  # anchor points each object may take
    alpha: Annotated[float, Range(ge=0)] = 1.0  # exponent of the class score in the alignment metric
    beta: Annotated[float, Range(ge=0)] = 6.0  # exponent of the IoU in the alignment metric

    task: ClassVar[Task] = DETECTION

    def build(self, head: nn.Module | None = None) -> YoloCriterion:
        return YoloCriterion(assigner=TaskAlignedAssigner(topk=self.topk, alpha=self.alpha, beta=self.beta),
                             box_loss=self.box_loss, box_weight=self.box_weight, cls_weight=self.cls_weight)
