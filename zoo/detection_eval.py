"""COCO box evaluation: pycocotools' numbers (or faster-coco-eval's, identical), flat metric names, PR curves.

Typical use from a head's metrics::

    gt = to_coco_gt(images=[(image_id, h, w), ...], boxes=[xyxy [K, 4], ...], labels=[[K], ...], classes=classes)
    dt = to_coco_results(image_ids=[...], boxes=[xyxy [D, 4], ...], scores=[[D], ...], labels=[[D], ...])
    result = coco_evaluate(gt, dt)
    result.metrics["map50"]; plot_pr_curves(result, classes, out_dir / "pr_curves.png")

Metric names (``result.metrics``): ``map`` (AP@[.5:.95]), ``map50``, ``map75``, ``map_small``, ``map_medium``,
``map_large``, ``mar_1``, ``mar_10``, ``mar_100`` (AR at 1/10/100 detections per image), and ``ap/<class name>``
(AP@[.5:.95] of each category). As in pycocotools, a value is ``-1`` when there is no ground truth to measure it
(e.g. no small objects, or a class without any box). No detections at all give AP 0, not a crash.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from zoo.data.coco import CocoFormatError, coco_from_dict, prepare_coco_dict
from zoo.errors import ZooError

__all__ = ["CocoEvalResult", "coco_evaluate", "coco_evaluate_files", "to_coco_gt", "to_coco_results",
           "plot_pr_curves", "synthetic_coco_pair", "BACKENDS"]

BACKENDS = ("pycocotools", "faster_coco_eval")
_SUMMARY = ("map", "map50", "map75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100",
            "mar_small", "mar_medium", "mar_large")  # the order of COCOeval.stats


@dataclass
class CocoEvalResult:
    """What one evaluation gives.

    Attributes:
        metrics: flat ``name -> number`` (see the module docstring).
        precision: COCOeval's ``[T, R, K, A, M]`` array — IoU thresholds (.50:.05:.95), 101 recall points,
            categories (``category_ids`` order), area ranges (all, small, medium, large), max detections (1, 10,
            100); ``-1`` where there is no ground truth.
        recall: ``[T, K, A, M]``.
        iou_thresholds / recall_thresholds: the ``T`` and ``R`` axes.
        category_ids / classes: the ``K`` axis (COCO ids sorted, and their names).
    """

    metrics: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    category_ids: list[int]
    classes: list[str]


def _api(backend: str) -> tuple[Any, Any]:
    """``(COCO class, COCOeval class)`` of a backend."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster_coco_eval":
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError as error:
            raise ZooError("backend 'faster_coco_eval' is not installed; pip install 'zoo[fast]' "
                           "(or faster-coco-eval), or use backend='pycocotools'") from error
        return COCO, COCOeval_faster
    raise ZooError(f"unknown COCO evaluation backend {backend!r}; choose one of {list(BACKENDS)}")


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _checked_box(box: Any, where: str) -> tuple[float, float, float, float]:
    """``[x, y, w, h]`` as four finite floats with ``w, h >= 0``, or a ``CocoFormatError`` naming ``where``."""
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(map(_is_real, box)):
        raise CocoFormatError(f"{where} has bbox {box!r}; a bbox is [x, y, w, h], four numbers")
    x, y, w, h = (float(v) for v in box)
    if not all(map(math.isfinite, (x, y, w, h))):
        raise CocoFormatError(f"{where} has bbox {list(box)}; x, y, w and h must be finite numbers")
    return x, y, w, h


def _prepare_results(dt: Sequence[dict], gt: dict, *, source: str) -> dict:
    """The results list as a COCO dict over the ground truth's images (what ``loadRes`` builds, but it also works
    for an empty list, which ``loadRes`` crashes on)."""
    image_ids = {image["id"] for image in gt["images"]}
    category_ids = {c["id"] for c in gt["categories"]}
    annotations = []
    for n, det in enumerate(dt):
        if not isinstance(det, dict) or not {"image_id", "category_id", "bbox", "score"} <= det.keys():
            raise CocoFormatError(f"{source}: result [{n}] is not a box detection (needs image_id, category_id, "
                                  f"bbox [x, y, w, h], score), got {det!r}")
        if det["image_id"] not in image_ids:
            raise CocoFormatError(f"{source}: result [{n}] has image_id {det['image_id']!r}, which is not in the "
                                  "ground truth's images")
        if det["category_id"] not in category_ids:
            raise CocoFormatError(f"{source}: result [{n}] has category_id {det['category_id']!r}; the ground "
                                  f"truth's category ids are {sorted(category_ids)}")
        x, y, w, h = _checked_box(det["bbox"], f"{source}: result [{n}]")
        score = det["score"]
        if not _is_real(score) or not math.isfinite(score):
            raise CocoFormatError(f"{source}: result [{n}] has score {score!r}; a score is a finite number")
        annotations.append({**det, "bbox": [x, y, w, h], "score": float(score), "area": w * h, "iscrowd": 0,
                            "id": n + 1})
    negative = sum(1 for a in annotations if a["bbox"][2] < 0 or a["bbox"][3] < 0)
    if negative:  # kept, as pycocotools keeps them (they overlap nothing), so the numbers stay pycocotools'
        warnings.warn(f"{source}: {negative} detection(s) have a negative width or height; evaluated as "
                      f"pycocotools does (they match no ground truth)", stacklevel=2)
    return {"images": gt["images"], "categories": gt["categories"], "annotations": annotations}


def coco_evaluate(gt: dict, dt: Sequence[dict], *, backend: Literal["pycocotools", "faster_coco_eval"] = "pycocotools",
                  gt_source: str = "ground truth", dt_source: str = "detections") -> CocoEvalResult:
    """Evaluate box detections against a COCO ground truth, as ``COCOeval(iouType="bbox")`` does.

    Args:
        gt: a COCO ground-truth dict (``images``, ``categories``, ``annotations`` with ``bbox`` ``[x, y, w, h]``);
            not modified. Annotation id 0, duplicate ids and missing ``iscrowd``/``area`` are handled.
        dt: COCO results: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` dicts; may be empty.
        backend: ``"pycocotools"`` or ``"faster_coco_eval"`` (same numbers, faster; ``pip install 'zoo[fast]'``).
        gt_source / dt_source: names for error messages (the files).

    Returns:
        A :class:`CocoEvalResult`.

    Raises:
        CocoFormatError: malformed input, or a detection whose image or category is not in the ground truth.
    """
    coco_cls, eval_cls = _api(backend)
    gt = prepare_coco_dict(gt, source=gt_source)
    if not gt["categories"]:
        raise CocoFormatError(f"{gt_source}: no 'categories'; box evaluation needs them")
    for n, annotation in enumerate(gt["annotations"]):
        _checked_box(annotation.get("bbox"), f"{gt_source}: annotation [{n}] (id {annotation.get('id')!r})")
    coco_gt = coco_from_dict(gt, api=coco_cls)
    coco_dt = coco_from_dict(_prepare_results(dt, gt, source=dt_source), api=coco_cls)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = eval_cls(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    category_ids = sorted(evaluator.params.catIds)
    names = {c["id"]: str(c["name"]) for c in gt["categories"]}
    precision = np.asarray(evaluator.eval["precision"])
    metrics = {name: float(v) for name, v in zip(_SUMMARY, evaluator.stats)}
    for k, cid in enumerate(category_ids):
        values = precision[:, :, k, 0, -1]  # every IoU, every recall point, area "all", 100 detections
        values = values[values > -1]
        metrics[f"ap/{names[cid]}"] = float(values.mean()) if values.size else -1.0
    return CocoEvalResult(metrics=metrics, precision=precision, recall=np.asarray(evaluator.eval["recall"]),
                          iou_thresholds=np.asarray(evaluator.params.iouThrs),
                          recall_thresholds=np.asarray(evaluator.params.recThrs), category_ids=category_ids,
                          classes=[names[c] for c in category_ids])


def _read_json(path: str | os.PathLike, what: str) -> Any:
    try:
        return json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise CocoFormatError(f"{what} file {str(path)!r} does not exist") from error
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CocoFormatError(f"cannot read {what} file {str(path)!r} as JSON: {error}") from error


def coco_evaluate_files(gt_path: str | os.PathLike, dt_path: str | os.PathLike, *,
                        backend: Literal["pycocotools", "faster_coco_eval"] = "pycocotools") -> CocoEvalResult:
    """:func:`coco_evaluate` on a ground-truth file and a results file (a JSON list), as ``zoo eval --gt --dt``."""
    gt = _read_json(gt_path, "ground-truth (--gt)")
    dt = _read_json(dt_path, "detections (--dt)")
    if not isinstance(dt, list):
        raise CocoFormatError(f"{dt_path}: a COCO results file is a JSON list of detections, got "
                              f"{type(dt).__name__}")
    return coco_evaluate(gt, dt, backend=backend, gt_source=str(gt_path), dt_source=str(dt_path))


def _rows(x: Any, width: int | None = None) -> np.ndarray:
    array = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, np.float64)
    return array.reshape(-1, width) if width else array.reshape(-1)


def _xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def to_coco_gt(*, images: Sequence[tuple[int, int, int]], boxes: Sequence[Any], labels: Sequence[Any],
               classes: Sequence[str]) -> dict:
    """A COCO ground-truth dict from per-image targets.

    Args:
        images: ``(image_id, height, width)`` per image.
        boxes: per image, xyxy absolute-pixel boxes ``[K, 4]`` (tensor or array).
        labels: per image, 0-based class ids ``[K]``; category id = label + 1.
        classes: class names in label order.
    """
    out_images, annotations = [], []
    for (image_id, h, w), image_boxes, image_labels in zip(images, boxes, labels, strict=True):
        out_images.append({"id": int(image_id), "height": int(h), "width": int(w)})
        for box, label in zip(_xywh(_rows(image_boxes, 4)), _rows(image_labels)):
            annotations.append({"id": len(annotations) + 1, "image_id": int(image_id), "category_id": int(label) + 1,
                                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    return {"images": out_images, "categories": categories, "annotations": annotations}


def to_coco_results(*, image_ids: Sequence[int], boxes: Sequence[Any], scores: Sequence[Any],
                    labels: Sequence[Any]) -> list[dict]:
    """COCO results from per-image detections (xyxy absolute-pixel boxes ``[D, 4]``, scores ``[D]``, 0-based
    labels ``[D]``; category id = label + 1)."""
    results = []
    for image_id, image_boxes, image_scores, image_labels in zip(image_ids, boxes, scores, labels, strict=True):
        for box, score, label in zip(_xywh(_rows(image_boxes, 4)), _rows(image_scores), _rows(image_labels)):
            results.append({"image_id": int(image_id), "category_id": int(label) + 1,
                            "bbox": [round(float(v), 3) for v in box], "score": round(float(score), 5)})
    return results


def plot_pr_curves(result: CocoEvalResult, classes: Sequence[str] | None, path: str | os.PathLike, *,
                   iou: float = 0.5) -> Path:
    """One precision-recall curve per class at IoU ``iou`` (area all, 100 detections), AP in the legend.

    Args:
        result: from :func:`coco_evaluate`.
        classes: names for the legend (default ``result.classes``).
        path: the image file to write (its folder is created).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = int(np.argmin(np.abs(result.iou_thresholds - iou)))
    names = list(classes) if classes is not None else result.classes
    fig, ax = plt.subplots(figsize=(6, 5))
    for k, name in enumerate(names[: result.precision.shape[2]]):
        curve = result.precision[t, :, k, 0, -1]
        if (curve > -1).any():
            ax.plot(result.recall_thresholds, np.clip(curve, 0, None), label=f"{name} (AP {curve.mean():.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"precision-recall at IoU {result.iou_thresholds[t]:.2f}")
    if ax.lines:
        ax.legend(loc="lower left", fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def synthetic_coco_pair(num_images: int, *, classes: Sequence[str] = ("circle", "square", "triangle"), seed: int = 0,
                        image_size: int = 400) -> tuple[dict, list[dict]]:
    """A generated ``(ground truth, results)`` pair for tests and benchmarks.

    Each image has 0..5 boxes of every size class (some images are background); the detections keep ~80 % of them
    with jittered corners and ~10 % wrong classes, plus 0..3 false positives per image, with random scores.
    """
    rng = np.random.default_rng(seed)
    images, gt_boxes, gt_labels, dt_boxes, dt_scores, dt_labels = [], [], [], [], [], []
    span = image_size * 5 / 8
    for image_id in range(1, num_images + 1):
        k = int(rng.integers(0, 6))
        xy, wh = rng.uniform(0, span, (k, 2)), rng.uniform(4, span * 0.6, (k, 2))
        boxes, labels = np.concatenate([xy, xy + wh], axis=1), rng.integers(0, len(classes), k)
        images.append((image_id, image_size, image_size))
        gt_boxes.append(boxes)
        gt_labels.append(labels)
        keep = rng.random(k) < 0.8
        extra = int(rng.integers(0, 4))
        fp_xy = rng.uniform(0, span * 1.2, (extra, 2))
        dt_boxes.append(np.concatenate([boxes[keep] + rng.normal(0, 4, (int(keep.sum()), 4)),
                                        np.concatenate([fp_xy, fp_xy + rng.uniform(5, span / 3, (extra, 2))], axis=1)]))
        flip = rng.random(int(keep.sum())) < 0.1
        dt_labels.append(np.concatenate([np.where(flip, (labels[keep] + 1) % len(classes), labels[keep]),
                                         rng.integers(0, len(classes), extra)]))
        dt_scores.append(rng.uniform(0, 1, len(dt_boxes[-1])))
    gt = to_coco_gt(images=images, boxes=gt_boxes, labels=gt_labels, classes=classes)
    return gt, to_coco_results(image_ids=[i for i, _, _ in images], boxes=dt_boxes, scores=dt_scores,
                               labels=dt_labels)
