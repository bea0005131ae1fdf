"""Object detection, the shared part: decoding + NMS, COCO metrics, prediction, drawing, and the YOLO v1 grid head.

Every detection head returns a dict holding at least::

    "boxes":  [N, A, 4] float, xyxy in absolute pixels of the model input, one box per anchor/predictor
    "scores": [N, A, C] float in [0, 1], per-class scores of each box

so one decoder (:func:`decode_detections`), one metric (:class:`DetectionMetrics`) and one ``Task``
(:data:`DETECTION`) serve them all; the head's own raw outputs (for its loss) ride along in the same dict.
Targets (``zoo.data.detection``): per image ``{"boxes": float32 [K, 4] xyxy model-input pixels, "labels": int64 [K],
"image_id": int, "orig_size": (H, W)}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_convert, box_iou

from zoo.backbones.base import FeatureInfo
from zoo.draw import as_rgb, draw_boxes, upscale
from zoo.recipe.spec import Range, spec
from zoo.task import Geometry, HeadContext, ImageGeometry, Task, check_level

__all__ = ["Detections", "select_detections", "decode_detections", "export_detections", "boxes_to_original",
           "DetectionMetrics", "predict_detections", "draw_detections", "save_coco_detections", "TRUTH", "DETECTION", "YoloV1GridHead", "YoloV1", "YoloV1Loss",
           "YoloV1Criterion", "yolo_v1_targets", "paired_box_iou"]

EVAL_NMS = {"score_threshold": 0.001, "iou_threshold": 0.6, "max_detections": 100}  # COCO-style evaluation
TRUTH = (255, 255, 255)  # colour of true boxes in drawings
_PRE_NMS_TOP_K = 1000  # candidates per image kept before NMS (keeps NMS cheap on untrained models)


@dataclass
class Detections:
    """One image's detections: ``boxes [M, 4]`` xyxy, ``scores [M]``, ``labels [M]`` int64, best first."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, *, score_threshold: float = 0.25,
                      iou_threshold: float = 0.45, max_detections: int = 100) -> dict[str, torch.Tensor]:
    """``boxes [N, A, 4]``, ``scores [N, A, C]`` → the kept detections of the whole batch, flat and best first:
    ``boxes [M, 4]`` (xyxy), ``scores [M]``, ``labels [M]`` and ``batch_index [M]`` (the image of each, int64).

    Every (box, class) pair above ``score_threshold`` among each image's best ``_PRE_NMS_TOP_K`` pairs is a candidate
    (a box may be kept for two classes); class-wise NMS at ``iou_threshold`` within each image (``batched_nms`` over
    the group ``image * C + class``); then each image's ``max_detections`` best. Only tensor operations whose sizes
    follow the input, so ``zoo export`` traces this function into the graph (NMS becomes ONNX NonMaxSuppression).
    """
    n, anchors, num_classes = scores.shape
    k = min(_PRE_NMS_TOP_K, anchors * num_classes)
    top, index = scores.flatten(1).topk(k, dim=1)  # [N, k] each image's best (box, class) pairs
    image = torch.arange(n, device=scores.device)[:, None].expand(n, k).reshape(-1)
    top, index = top.reshape(-1), index.reshape(-1)
    keep = top > score_threshold
    image, top, index = image[keep], top[keep], index[keep]
    labels = index % num_classes
    picked = boxes[image, torch.div(index, num_classes, rounding_mode="floor")]
    kept = batched_nms(picked, top, image * num_classes + labels, iou_threshold)  # best first
    image = image[kept]
    same = image[:, None] == torch.arange(n, device=scores.device)[None]  # [M, N]
    rank = (same.long().cumsum(0) * same.long()).sum(1) - 1  # place of each detection within its image
    within = rank < max_detections
    kept = kept[within]
    return {"boxes": picked[kept], "scores": top[kept], "labels": labels[kept], "batch_index": image[within]}


def decode_detections(outputs: dict[str, torch.Tensor], *, score_threshold: float = 0.25,
                      iou_threshold: float = 0.45, max_detections: int = 100) -> list[Detections]:
    """Head outputs → per-image detections after score threshold and class-wise NMS (:func:`select_detections`)."""
    boxes, scores = outputs["boxes"].detach().float(), outputs["scores"].detach().float()
    found = select_detections(boxes, scores, score_threshold=score_threshold, iou_threshold=iou_threshold,
                              max_detections=max_detections)
    result = []
    for i in range(len(scores)):
        mine = found["batch_index"] == i
        result.append(Detections(found["boxes"][mine], found["scores"][mine], found["labels"][mine]))
    return result


def boxes_to_original(boxes: torch.Tensor, *, input_size: tuple[int, int], image_size: tuple[int, int],
                      resize: str) -> torch.Tensor:
    """Boxes ``[M, 4]`` xyxy in model-input pixels → pixels of the original ``image_size`` (H, W), clipped.

    Undoes ``Augment.resize``: "stretch" scales each axis; "letterbox" removes the centred padding of
    ``PadIfNeeded`` and the single scale of ``LongestMaxSize``.
    """
    (in_h, in_w), (h, w) = input_size, image_size
    boxes = boxes.clone().float()
    if resize == "letterbox":
        scale = min(in_h, in_w) / max(h, w)
        fitted_h, fitted_w = round(h * scale), round(w * scale)
        pad_top, pad_left = (in_h - fitted_h) // 2, (in_w - fitted_w) // 2
        boxes[:, 0::2] = (boxes[:, 0::2] - pad_left) * (w / fitted_w)
        boxes[:, 1::2] = (boxes[:, 1::2] - pad_top) * (h / fitted_h)
    else:
        boxes[:, 0::2] *= w / in_w
        boxes[:, 1::2] *= h / in_h
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    return boxes


class DetectionMetrics(nn.Module):
    """COCO mAP@[.5:.95] (``map``), mAP@.5 (``map50``) and per-class AP (``ap/<class>``) over a whole split.

    Ground truth and decoded detections (score ≥ 0.001, NMS 0.6, 100 per image) are gathered in model-input
    pixels; ``compute`` hands them to ``zoo.detection_eval.coco_evaluate`` (pycocotools). No detections at all
    give AP 0.
    """

    gathered = ("_truth", "_found")  # joined across ranks before compute (zoo.engine.module)

    def __init__(self, classes: Sequence[str]) -> None:
        super().__init__()
        self.classes = list(classes)
        self.reset()
        self._last: Any = None

    def reset(self) -> None:
        self._truth: list[tuple[torch.Tensor, torch.Tensor, tuple[int, int]]] = []  # boxes, labels, input (H, W)
        self._found: list[Detections] = []

    def update(self, outputs: dict[str, torch.Tensor], targets: Sequence[dict]) -> None:
        for t, d in zip(targets, decode_detections(outputs, **EVAL_NMS)):
            size = tuple(t.get("size", (0, 0)))  # the model input (H, W): informational for box AP
            self._truth.append((t["boxes"].detach().cpu(), t["labels"].detach().cpu(), size))
            self._found.append(Detections(d.boxes.cpu(), d.scores.cpu(), d.labels.cpu()))

    def compute(self) -> dict[str, float]:
        from zoo.detection_eval import coco_evaluate, to_coco_gt, to_coco_results

        ids = range(1, len(self._truth) + 1)  # our own ids: a split's source ids need not be unique
        gt = to_coco_gt(images=[(i, h, w) for i, (_, _, (h, w)) in zip(ids, self._truth)],
                        boxes=[b for b, _, _ in self._truth], labels=[lab for _, lab, _ in self._truth],
                        classes=self.classes)
        dt = to_coco_results(image_ids=ids, boxes=[d.boxes for d in self._found],
                             scores=[d.scores for d in self._found], labels=[d.labels for d in self._found])
        self._last = coco_evaluate(gt, dt)
        return dict(self._last.metrics)

    def save_artifacts(self, out_dir: Path) -> list[Path]:
        if self._last is None:
            return []
        from zoo.detection_eval import plot_pr_curves

        return [plot_pr_curves(self._last, self.classes, Path(out_dir) / "pr_curves.png")]


def predict_detections(outputs: dict[str, torch.Tensor], head: HeadContext, geometry: Geometry) -> list[dict]:
    """Per image ``{"detections": [{"class", "index", "score", "box": [x1, y1, x2, y2]}, ...]}``, best first, with the
    head spec's ``score_threshold``, ``iou_threshold`` and ``max_detections``.

    Boxes are in original-image pixels when ``geometry.image_sizes`` is given, else in model-input pixels.
    """
    classes, spec_ = head.classes, head.spec
    results = []
    found = decode_detections(outputs, score_threshold=spec_.score_threshold, iou_threshold=spec_.iou_threshold,
                              max_detections=spec_.max_detections)
    for i, d in enumerate(found):
        boxes = d.boxes
        if geometry.image_sizes is not None:
            boxes = boxes_to_original(boxes, input_size=geometry.input_size, image_size=geometry.image_sizes[i],
                                      resize=geometry.resize)
        results.append({"detections": [
            {"class": classes[k], "index": k, "score": round(s, 5), "box": [round(v, 2) for v in box]}
            for box, s, k in zip(boxes.tolist(), d.scores.tolist(), d.labels.tolist())]})
    return results


def draw_detections(image: np.ndarray, prediction: dict, target: dict | None, classes: Sequence[str]) -> np.ndarray:
    """Predicted boxes with "class score" labels (one colour per class); true boxes in thin white when given (white
    is in no class's colour, so truth never reads as a prediction)."""
    picture, factor = upscale(as_rgb(image), min_side=256)
    if target is not None:
        boxes = target["boxes"].detach().cpu().numpy().reshape(-1, 4) * factor
        picture = draw_boxes(picture, boxes, [""] * len(target["labels"]), colors=TRUTH, width=1)
    found = prediction["detections"]
    boxes = np.array([d["box"] for d in found], dtype=np.float32).reshape(-1, 4) * factor
    return draw_boxes(picture, boxes, [f"{d['class']} {d['score']:.2f}" for d in found],
                      colors=[d["index"] for d in found], width=2)


def match_boxes(boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, truth_boxes: torch.Tensor,
                truth_labels: torch.Tensor, *, iou: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy matching as COCO does it at one IoU: predictions by falling score each take the unmatched true box of
    their class they overlap most (IoU >= ``iou``). Returns ``(matched prediction mask [P], matched truth mask [M])``."""
    taken = torch.zeros(len(truth_boxes), dtype=torch.bool)
    hit = torch.zeros(len(boxes), dtype=torch.bool)
    if len(boxes) and len(truth_boxes):
        overlaps = box_iou(boxes.float(), truth_boxes.float())
        for i in scores.argsort(descending=True).tolist():
            candidates = overlaps[i].clone()
            candidates[(truth_labels != labels[i]) | taken] = -1
            j = int(candidates.argmax())
            if candidates[j] >= iou:
                taken[j] = hit[i] = True
    return hit, taken


def judge_detections(prediction: dict, target: dict, classes: Sequence[str]) -> tuple[str, float, str] | None:
    """Missed true boxes plus false detections (at the head's score threshold, IoU 0.5, same class); ``None`` when
    every box was found and nothing else was."""
    found = prediction["detections"]
    boxes = torch.tensor([d["box"] for d in found], dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor([d["index"] for d in found], dtype=torch.long)
    scores = torch.tensor([d["score"] for d in found], dtype=torch.float32)
    truth_boxes = target["boxes"].detach().cpu().reshape(-1, 4)
    hit, taken = match_boxes(boxes, labels, scores, truth_boxes, target["labels"].detach().cpu().long())
    missed, false = int((~taken).sum()), int((~hit).sum())
    if missed + false == 0:
        return None
    return "missed and false boxes", missed + false, f"{missed} missed, {false} false of {len(truth_boxes)} true"


def save_coco_detections(results: list[dict], classes: Sequence[str], out_dir: Path) -> list[Path]:
    """``detections.json``: a COCO results list (``bbox`` xywh original pixels; ``category_id`` = class index + 1,
    ``image_id`` = position in ``predictions.json`` + 1) and ``detection_images.json`` naming each image id's file."""
    out_dir = Path(out_dir)
    rows, images = [], []
    for image_id, r in enumerate(results, start=1):
        images.append({"id": image_id, "file_name": r.get("image", str(image_id))})
        for d in r["detections"]:
            x1, y1, x2, y2 = d["box"]
            rows.append({"image_id": image_id, "category_id": d["index"] + 1, "category_name": d["class"],
                         "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)], "score": d["score"]})
    paths = [out_dir / "detections.json", out_dir / "detection_images.json"]
    paths[0].write_text(json.dumps(rows))
    paths[1].write_text(json.dumps({"images": images,
                                    "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}))
    return paths


def explain_detection(outputs: dict[str, torch.Tensor], k: int | None) -> tuple[torch.Tensor, int, float]:
    """The first image's best box score for class ``k`` (default: the class of the best-scoring box), as
    pytorch-grad-cam's box-score targets do for one detection; the probability is that score."""
    scores = outputs["scores"][0]  # [A, C]
    if k is None:
        k = int(scores.detach().max(0).values.argmax())
    best = scores[:, k].max()
    return best, k, float(best.detach())


def export_detections(outputs: dict[str, torch.Tensor], head: HeadContext, geometry: Geometry
                      ) -> dict[str, torch.Tensor]:
    """Decoding and class-wise NMS in the graph, with the head spec's ``score_threshold``, ``iou_threshold`` and
    ``max_detections``: :func:`select_detections`' flat ``boxes [M, 4]`` (xyxy model-input pixels, clipped to the
    input), ``scores [M]``, ``labels [M]``, ``batch_index [M]``."""
    spec_ = head.spec
    found = select_detections(outputs["boxes"].float(), outputs["scores"].float(),
                              score_threshold=spec_.score_threshold, iou_threshold=spec_.iou_threshold,
                              max_detections=spec_.max_detections)
    h, w = geometry.input_size
    limit = torch.tensor([w, h, w, h], dtype=torch.float32, device=found["boxes"].device)
    return {**found, "boxes": torch.minimum(found["boxes"].clamp(min=0), limit)}


def pool_detections(outputs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Several detectors' candidate boxes and scores concatenated (``[N, sum A, ...]``), so that decoding runs one
    class-wise NMS over all of them ("merged NMS"; a box two models agree on is kept once, with the higher score)."""
    return {key: torch.cat([o[key] for o in outputs], dim=1) for key in ("boxes", "scores")}


def unflip_detections(outputs: dict[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    """Boxes predicted on a horizontally flipped input mapped back: ``x1, x2 = W - x2, W - x1``."""
    boxes = outputs["boxes"]
    return {"boxes": torch.stack([width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3]], -1),
            "scores": outputs["scores"]}


DETECTION = Task(name="detection", target="boxes", monitor="map", mode="max",
                 metrics=("map", "map50", "map75", "map_small", "map_medium", "map_large", "mar_1", "mar_10",
                          "mar_100"), per_class="ap", make_metrics=lambda head: DetectionMetrics(head.classes),
                 predict=predict_detections, explain=explain_detection, draw=draw_detections,
                 save_predictions=save_coco_detections, export=export_detections,
                 combine=pool_detections, unflip=unflip_detections, judge=judge_detections, shown=("map50", "map"),
                 legend="thin white boxes: the truth; coloured boxes: predictions, labelled class and score")


@dataclass(frozen=True, kw_only=True)
class DetectorOptions:
    """Prediction settings every detection head spec has (overridable: ``model.head.score_threshold=0.5``)."""

    score_threshold: Annotated[float, Range(ge=0, le=1)] = 0.25  # predict: lowest class score kept
    iou_threshold: Annotated[float, Range(ge=0, le=1)] = 0.45  # predict: class-wise NMS IoU threshold
    max_detections: Annotated[int, Range(ge=1)] = 100  # predict: most boxes kept per image


# --- YOLO v1 -----------------------------------------------------------------------------------------------------

class YoloV1GridHead(nn.Module):
    """The YOLO v1 output: one backbone feature map (the deepest by default) pooled to an S×S grid, each cell
    predicting B boxes and C classes.

    Per cell: B × (x, y, √w, √h, confidence) and C class probabilities (softmax), all in [0, 1]: x, y are the box
    centre within the cell, √w, √h the square roots of the box size relative to the image (as in the paper's loss).

    Args:
        in_channels: channels of the feature map read.
        num_classes: C.
        grid: S.
        boxes_per_cell: B.
        hidden: channels of the 3x3 conv layer before the output (the paper's FC layers, as convolutions).
        level: index of the backbone feature map read (-1: the deepest).
    """

    def __init__(self, *, in_channels: int, num_classes: int, grid: int = 7, boxes_per_cell: int = 2,
                 hidden: int = 256, level: int = -1) -> None:
        super().__init__()
        self.grid, self.boxes_per_cell, self.num_classes = grid, boxes_per_cell, num_classes
        self.level = level
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.body = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden),
                                  nn.LeakyReLU(0.1, inplace=True))
        self.out = nn.Conv2d(hidden, boxes_per_cell * 5 + num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        x = features[self.level]
        n, b = x.shape[0], self.boxes_per_cell
        raw = self.out(self.body(self.pool(x))).permute(0, 2, 3, 1)  # [N, S, S, B*5 + C]
        box = raw[..., :b * 5].reshape(n, self.grid, self.grid, b, 5).sigmoid()  # [N, S, S, B, 5]
        probs = raw[..., b * 5:].softmax(-1)  # [N, S, S, C]
        return {"grid_boxes": box, "class_probs": probs}


def _grid_boxes_to_xyxy(box: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """``[..., S, S, B, 5]`` cell-relative (x, y, √w, √h, conf) → ``[..., S, S, B, 4]`` xyxy image pixels."""
    s = box.shape[-3]
    h, w = image_hw
    cells = torch.arange(s, device=box.device, dtype=box.dtype)
    cx = (box[..., 0] + cells.view(1, s, 1)) / s * w  # cells along x: the column index (dim -2 of the S×S grid)
    cy = (box[..., 1] + cells.view(s, 1, 1)) / s * h
    bw, bh = box[..., 2] ** 2 * w, box[..., 3] ** 2 * h
    return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1)


class _YoloV1Module(nn.Module):
    """Adds the decoded ``boxes``/``scores`` (for the shared decoder) to the grid head's outputs."""

    def __init__(self, head: YoloV1GridHead, stride: int) -> None:
        super().__init__()
        self.head, self.stride = head, stride

    def forward(self, features: list[torch.Tensor], images: torch.Tensor | None = None, target: Any = None
                ) -> dict[str, torch.Tensor]:
        out = self.head(features)
        read = features[self.head.level]
        # The input size the grid covers: the map's size times its stride (exact for padded backbones).
        image_hw = (read.shape[-2] * self.stride, read.shape[-1] * self.stride)
        box, probs = out["grid_boxes"], out["class_probs"]
        n, b = box.shape[0], box.shape[3]
        xyxy = _grid_boxes_to_xyxy(box, image_hw)  # [N, S, S, B, 4]
        scores = box[..., 4:5] * probs.unsqueeze(3)  # [N, S, S, B, C]: confidence × class probability
        return {**out, "image_hw": torch.tensor(image_hw), "boxes": xyxy.reshape(n, -1, 4),
                "scores": scores.reshape(n, -1, probs.shape[-1])}


@spec
class YoloV1(DetectorOptions):
    num_classes: Annotated[int, Range(ge=1)] | None = None  # None: the dataset's class count
    grid: Annotated[int, Range(ge=1)] = 7  # S: the S×S grid of cells
    boxes_per_cell: Annotated[int, Range(ge=1)] = 2  # B: box predictors per cell
    hidden: Annotated[int, Range(ge=8)] = 256  # channels of the conv layer before the output
    level: int = -1  # which backbone feature map the grid reads (-1: the deepest; -2: the one before ...)

    task: ClassVar[Task] = DETECTION

    def build(self, feature_info: Sequence[FeatureInfo], *, num_classes: int,
              geometry: ImageGeometry | None = None) -> nn.Module:
        read = check_level(feature_info, self.level)
        head = YoloV1GridHead(in_channels=read.channels, num_classes=num_classes, grid=self.grid,
                              boxes_per_cell=self.boxes_per_cell, hidden=self.hidden, level=self.level)
        return _YoloV1Module(head, read.stride)


def yolo_v1_targets(boxes: torch.Tensor, labels: torch.Tensor, *, grid: int, image_hw: tuple[int, int]
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's truth on the grid: the cell holding each box centre is responsible for it.

    Args:
        boxes: ``[K, 4]`` xyxy image pixels. labels: ``[K]``.

    Returns:
        ``occupied [S, S]`` bool, ``box [S, S, 4]`` cell-relative (x, y, √w, √h) targets, ``label [S, S]``
        (a cell holding two centres keeps the larger box).
    """
    h, w = image_hw
    occupied = torch.zeros(grid, grid, dtype=torch.bool, device=boxes.device)
    target = torch.zeros(grid, grid, 4, device=boxes.device)
    label = torch.zeros(grid, grid, dtype=torch.long, device=boxes.device)
    if boxes.numel():
        cxcywh = box_convert(boxes.float(), "xyxy", "cxcywh")
        order = (cxcywh[:, 2] * cxcywh[:, 3]).argsort()  # small first, so larger boxes overwrite a shared cell
        for k in order.tolist():
            cx, cy, bw, bh = cxcywh[k].tolist()
            col = min(grid - 1, max(0, int(cx / w * grid)))
            row = min(grid - 1, max(0, int(cy / h * grid)))
            occupied[row, col] = True
            target[row, col] = torch.tensor([cx / w * grid - col, cy / h * grid - row, (bw / w) ** 0.5,
                                             (bh / h) ** 0.5], device=boxes.device)
            label[row, col] = labels[k]
    return occupied, target, label


class YoloV1Criterion(nn.Module):
    """The YOLO v1 sum-squared loss, per image (summed over cells, averaged over the batch).

    The responsible predictor of an occupied cell is the one of its B boxes with the highest IoU with the truth; it
    regresses x, y, √w, √h (weight ``coord``) and its confidence to that IoU. Every other predictor's confidence goes
    to 0 (weight ``noobj``). Occupied cells regress their class probabilities to the one-hot class.
    """

    def __init__(self, *, coord: float, noobj: float) -> None:
        super().__init__()
        self.coord, self.noobj = coord, noobj

    def forward(self, outputs: dict[str, torch.Tensor], targets: Sequence[dict]) -> dict[str, torch.Tensor]:
        box, probs = outputs["grid_boxes"], outputs["class_probs"]  # [N, S, S, B, 5], [N, S, S, C]
        n, s, _, b, _ = box.shape
        image_hw = tuple(int(v) for v in outputs["image_hw"])
        pieces = [yolo_v1_targets(t["boxes"], t["labels"], grid=s, image_hw=image_hw) for t in targets]
        occupied = torch.stack([p[0] for p in pieces])  # [N, S, S]
        target_box = torch.stack([p[1] for p in pieces])  # [N, S, S, 4]
        target_label = torch.stack([p[2] for p in pieces])  # [N, S, S]

        with torch.no_grad():  # which of the B predictors is responsible: best IoU with the truth
            pred_xyxy = _grid_boxes_to_xyxy(box, image_hw)  # [N, S, S, B, 4]
            true_xyxy = _grid_boxes_to_xyxy(torch.cat([target_box, torch.ones_like(target_box[..., :1])], -1)
                                            .unsqueeze(3), image_hw)  # [N, S, S, 1, 4]
            iou = paired_box_iou(pred_xyxy, true_xyxy.expand_as(pred_xyxy))  # [N, S, S, B]
            best = iou.argmax(-1)
            responsible = F.one_hot(best, b).bool() & occupied.unsqueeze(-1)  # [N, S, S, B]

        coords = ((box[..., :4] - target_box.unsqueeze(3)) ** 2).sum(-1)  # [N, S, S, B]
        conf = box[..., 4]
        one_hot = F.one_hot(target_label, probs.shape[-1]).to(probs.dtype)
        return {
            "box": self.coord * coords[responsible].sum() / n,
            "obj": ((conf - iou) ** 2)[responsible].sum() / n,
            "noobj": self.noobj * (conf ** 2)[~responsible].sum() / n,
            "cls": ((probs - one_hot) ** 2).sum(-1)[occupied].sum() / n,
        }


def paired_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of ``a[..., 4]`` with ``b[..., 4]`` element by element (xyxy)."""
    lt, rb = torch.maximum(a[..., :2], b[..., :2]), torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[..., 2:] - x[..., :2]).clamp(min=0).prod(-1)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp(min=1e-9)


@spec
class YoloV1Loss:
    coord: Annotated[float, Range(gt=0)] = 5.0  # λcoord: weight of the box coordinate terms
    noobj: Annotated[float, Range(ge=0)] = 0.5  # λnoobj: weight of the confidence of predictors with no object

    task: ClassVar[Task] = DETECTION

    def build(self, head: nn.Module | None = None) -> nn.Module:
        return YoloV1Criterion(coord=self.coord, noobj=self.noobj)

