"""Detection heads: YOLO v1 grid matching and loss, the modern head's assignment/loss/decoding, the shared decoder,
COCO metrics, every head under several backbones, and one tiny run through the engine (train, eval, predict)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from heads import DETECTION, Localizer, Yolo, YoloLoss, YoloV1, YoloV1Loss
from heads.detection import (DetectionMetrics, _grid_boxes_to_xyxy, decode_detections,
                             save_coco_detections, yolo_v1_targets)
from heads.yolo import SIZES, TaskAlignedAssigner, YoloDetector, anchor_points
from zoo.task import Geometry, HeadContext


def _target(boxes, labels, size=(64, 64)) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.long), "image_id": 0, "orig_size": size, "size": size}


# --- YOLO v1 --------------------------------------------------------------------------------------------------------

def test_yolo_v1_responsible_cell_is_the_one_holding_the_centre():
    # 64 px, grid 8: cells of 8 px. Centre (20, 44) → column 2, row 5; centre (60, 4) → column 7, row 0.
    occupied, box, label = yolo_v1_targets(torch.tensor([[14., 38., 26., 50.], [56., 0., 64., 8.]]),
                                           torch.tensor([1, 2]), grid=8, image_hw=(64, 64))
    assert occupied.nonzero().tolist() == [[0, 7], [5, 2]]
    assert label[5, 2] == 1 and label[0, 7] == 2
    # cell-relative centre (20/8 - 2, 44/8 - 5) and √ of the size relative to the image
    assert torch.allclose(box[5, 2], torch.tensor([0.5, 0.5, (12 / 64) ** 0.5, (12 / 64) ** 0.5]))


def test_yolo_v1_rows_and_columns_are_not_swapped_in_decoding():
    # a tall image: grid rows span the height, columns the width
    occupied, box, _ = yolo_v1_targets(torch.tensor([[0., 90., 10., 100.]]), torch.tensor([0]), grid=4,
                                       image_hw=(100, 40))
    row, col = occupied.nonzero()[0].tolist()
    assert (row, col) == (3, 0)
    grid = torch.zeros(4, 4, 1, 5)
    grid[row, col, 0, :4] = box[row, col]
    assert torch.allclose(_grid_boxes_to_xyxy(grid, (100, 40))[row, col, 0], torch.tensor([0., 90., 10., 100.]),
                          atol=1e-4)


def _v1_outputs(targets, *, grid=8, b=2, c=3, image_hw=(64, 64)) -> dict:
    """The perfect YOLO v1 prediction of ``targets``: every predictor of an occupied cell on the true box."""
    boxes = torch.zeros(len(targets), grid, grid, b, 5)
    probs = torch.full((len(targets), grid, grid, c), 1.0 / c)
    for i, t in enumerate(targets):
        occupied, box, label = yolo_v1_targets(t["boxes"], t["labels"], grid=grid, image_hw=image_hw)
        boxes[i, occupied, :, :4] = box[occupied].unsqueeze(1)
        boxes[i, occupied, 0, 4] = 1.0  # predictor 0 is the responsible one (ties pick the first)
        probs[i, occupied] = nn.functional.one_hot(label[occupied], c).float()
    xyxy = _grid_boxes_to_xyxy(boxes, image_hw)
    return {"grid_boxes": boxes, "class_probs": probs, "image_hw": torch.tensor(image_hw),
            "boxes": xyxy.reshape(len(targets), -1, 4),
            "scores": (boxes[..., 4:5] * probs.unsqueeze(3)).reshape(len(targets), -1, c)}


def test_yolo_v1_perfect_prediction_has_zero_loss_and_a_shifted_one_does_not():
    targets = [_target([[14, 38, 26, 50], [40, 8, 60, 30]], [1, 0]), _target([[2, 2, 30, 20]], [2])]
    criterion = YoloV1Loss().build(None)
    perfect = _v1_outputs(targets)
    terms = criterion(perfect, targets)
    assert set(terms) == {"box", "obj", "noobj", "cls"}
    assert all(float(v) < 1e-6 for v in terms.values()), terms
    shifted = dict(perfect, grid_boxes=perfect["grid_boxes"].clone())
    shifted["grid_boxes"][..., 0] = (shifted["grid_boxes"][..., 0] + 0.3).clamp(max=1)
    assert float(criterion(shifted, targets)["box"]) > 0.1


def test_yolo_v1_round_trip_through_the_shared_decoder():
    targets = [_target([[14, 38, 26, 50], [40, 8, 60, 30]], [1, 0])]
    found = decode_detections(_v1_outputs(targets), score_threshold=0.5)[0]
    order = found.labels.argsort()
    assert found.labels[order].tolist() == [0, 1]
    assert torch.allclose(found.boxes[order], torch.tensor([[40., 8, 60, 30], [14, 38, 26, 50]]), atol=1e-3)


# --- the shared decoder and metrics -----------------------------------------------------------------------------------

def test_decode_keeps_one_box_per_object_and_class_after_nms():
    truth = torch.tensor([[10., 10, 30, 30], [40, 40, 60, 60]])
    boxes = torch.cat([truth, truth + 1.0, torch.tensor([[0., 0, 5, 5]])])[None]  # near duplicates + junk
    scores = torch.zeros(1, 5, 2)
    scores[0, 0, 0], scores[0, 1, 1], scores[0, 2, 0], scores[0, 3, 1], scores[0, 4, 0] = .9, .8, .6, .5, .1
    found = decode_detections({"boxes": boxes, "scores": scores}, score_threshold=0.25, iou_threshold=0.45)[0]
    assert torch.equal(found.boxes, truth) and found.labels.tolist() == [0, 1]
    assert torch.allclose(found.scores, torch.tensor([.9, .8]))
    # another class is never suppressed by NMS; max_detections cuts the list
    scores[0, 2] = torch.tensor([0.0, 0.7])
    assert len(decode_detections({"boxes": boxes, "scores": scores}, iou_threshold=0.45)[0].labels) == 3
    assert len(decode_detections({"boxes": boxes, "scores": scores}, max_detections=1)[0].labels) == 1


def test_metrics_perfect_detections_give_map_one_and_none_give_zero(tmp_path):
    classes = ["a", "b"]
    targets = [_target([[10, 10, 30, 30], [40, 40, 60, 60]], [0, 1]), _target([], [])]
    boxes = torch.stack([t["boxes"] if len(t["labels"]) else torch.zeros(2, 4) for t in targets])
    scores = torch.zeros(2, 2, 2)
    scores[0, 0, 0] = scores[0, 1, 1] = 0.9
    metrics = DetectionMetrics(classes)
    metrics.update({"boxes": boxes, "scores": scores}, targets)
    result = metrics.compute()
    assert result["map"] == pytest.approx(1.0) and result["map50"] == pytest.approx(1.0)
    assert result["ap/a"] == pytest.approx(1.0) and result["ap/b"] == pytest.approx(1.0)
    assert [p.name for p in metrics.save_artifacts(tmp_path)] == ["pr_curves.png"]
    metrics.reset()
    metrics.update({"boxes": boxes, "scores": torch.zeros_like(scores)}, targets)
    assert metrics.compute()["map"] == 0.0


def test_coco_results_file_round_trips_through_the_evaluator(tmp_path):
    from zoo.detection_eval import coco_evaluate, to_coco_gt

    results = [{"image": "a.png", "detections": [{"class": "b", "index": 1, "score": 0.9, "box": [10, 20, 30, 60]}]},
               {"image": "b.png", "detections": []}]
    written = save_coco_detections(results, ["a", "b"], tmp_path)
    rows = json.loads(written[0].read_text())
    assert rows == [{"image_id": 1, "category_id": 2, "category_name": "b", "bbox": [10, 20, 20, 40], "score": 0.9}]
    assert json.loads(written[1].read_text())["images"][1] == {"id": 2, "file_name": "b.png"}
    gt = to_coco_gt(images=[(1, 100, 100), (2, 100, 100)], boxes=[[[10, 20, 30, 60]], []], labels=[[1], []],
                    classes=["a", "b"])
    assert coco_evaluate(gt, rows).metrics["map"] == pytest.approx(1.0)


# --- the modern head --------------------------------------------------------------------------------------------------

class _FixedHead(nn.Module):
    """Stands in for the decoupled head: returns given per-level (logits, raw distances)."""

    def __init__(self, outs):
        super().__init__()
        self.outs = outs

    def forward(self, features):
        return self.outs


def test_modern_head_decoding_round_trip():
    detector = YoloDetector(in_channels=[8, 8], strides=[8, 16], widths=[16, 16], depth=1, num_classes=2)
    shapes, strides = [(8, 8), (4, 4)], [8, 16]
    truth = {0: torch.tensor([20., 12, 44, 30]), 1: torch.tensor([30., 34, 62, 60])}  # class → box
    outs = []
    for (h, w), s in zip(shapes, strides):
        logits, raw = torch.full((1, 2, h, w), -10.0), torch.zeros(1, 4, h, w)
        outs.append((logits, raw))
    points, _ = anchor_points(shapes, strides)
    for level, (label, box) in enumerate(truth.items()):  # class 0 on level 0, class 1 on level 1
        s, (h, w) = strides[level], shapes[level]
        cx, cy = float(box[0::2].mean()), float(box[1::2].mean())
        row, col = int(cy // s), int(cx // s)
        px, py = (col + 0.5) * s, (row + 0.5) * s
        distances = torch.tensor([px - box[0], py - box[1], box[2] - px, box[3] - py]) / s
        outs[level][1][0, :, row, col] = torch.log(torch.expm1(distances))  # inverse of softplus
        outs[level][0][0, label, row, col] = 5.0
    detector.head = _FixedHead(outs)
    detector.neck = nn.Identity()
    features = [torch.zeros(1, 8, h, w) for h, w in shapes]
    found = decode_detections(detector(features, torch.zeros(1, 3, 64, 64)))[0]
    assert found.labels.tolist() == [0, 1] or found.labels.tolist() == [1, 0]
    for label, box in zip(found.labels.tolist(), found.boxes):
        assert torch.allclose(box, truth[label], atol=1e-3)


def _modern_outputs(box: torch.Tensor, *, a_shape=(8, 8), stride=8, num_classes=3) -> dict:
    points, strides = anchor_points([a_shape], [stride])
    a = len(points)
    return {"cls_logits": torch.zeros(1, a, num_classes, requires_grad=True),
            "boxes": box.expand(1, a, 4).clone().requires_grad_(True), "points": points, "strides": strides}


def test_modern_loss_is_zero_for_a_perfect_box_and_positive_for_a_wrong_one():
    target = [_target([[12, 20, 40, 44]], [1])]
    criterion = YoloLoss().build(None)
    assert float(criterion(_modern_outputs(target[0]["boxes"][0]), target)["box"].detach()) < 1e-5
    assert float(criterion(_modern_outputs(torch.tensor([20., 28, 56, 60])), target)["box"].detach()) > 0.5


def test_assigner_picks_points_inside_the_box_and_keeps_tiny_objects():
    points, _ = anchor_points([(8, 8)], [8])
    gt = torch.tensor([[[8., 8, 40, 40], [49, 49, 51, 51]]])  # a 32 px box and a 2 px one between cell centres
    scores = torch.full((1, 64, 2), 0.5)
    boxes = torch.cat([points - 12, points + 12], -1)[None]  # 24 px boxes around every point
    target_boxes, target_scores, fg = TaskAlignedAssigner(topk=4)(scores, boxes, points, gt, torch.tensor([[0, 1]]),
                                                                  torch.tensor([[True, True]]))
    chosen = points[fg[0]]
    big = ((chosen[:, 0] > 8) & (chosen[:, 0] < 40) & (chosen[:, 1] > 8) & (chosen[:, 1] < 40))
    assert fg.sum() == 5 and big.sum() == 4  # topk of the big box, plus the tiny box's nearest point
    tiny = target_boxes[0][fg[0] & ~torch.tensor([bool(b) for b in _inside(points, gt[0, 0])])]
    assert torch.equal(tiny, gt[0, 1:2])
    assert target_scores[0, fg[0]].amax(0).gt(0).tolist() == [True, True]  # IoU-aware scores for both classes


def _inside(points, box):
    return ((points[:, 0] > box[0]) & (points[:, 0] < box[2]) & (points[:, 1] > box[1]) & (points[:, 1] < box[3]))


@pytest.mark.parametrize("loss", [YoloLoss(), YoloV1Loss()], ids=["modern", "v1"])
def test_images_without_objects_give_a_finite_loss_that_backpropagates(loss):
    head = (Yolo() if isinstance(loss, YoloLoss) else YoloV1(grid=4, hidden=16))
    from zoo.recipe import BackboneSpec

    backbone = BackboneSpec(name="resnet10t").build()
    model = head.build(backbone.feature_info, num_classes=3)
    images = torch.rand(2, 3, 32, 32)
    outputs = model(backbone(images), images)
    terms = loss.build(model)(outputs, [_target([], []), _target([], [])])
    total = sum(terms.values())
    assert torch.isfinite(total)
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_yolo_v1_reads_the_chosen_feature_level_and_refuses_a_missing_one():
    from zoo.data.detection import ShapesDetectionData
    from zoo.engine.run import check_model
    from zoo.errors import RecipeError
    from zoo.recipe import BackboneSpec, Recipe

    net = BackboneSpec(name="resnet10t").build().eval()  # strides 2, 4, 8, 16, 32
    images = torch.rand(1, 3, 32, 32)
    outputs = YoloV1(grid=4, hidden=16, level=-3).build(net.feature_info, num_classes=3)(net(images), images)
    assert outputs["image_hw"].tolist() == [32, 32] and outputs["boxes"].shape == (1, 4 * 4 * 2, 4)  # 4x4 map
    with pytest.raises(RecipeError, match=r"^level: -6 .*-5\.\.4"):  # built directly: the bare field
        YoloV1(level=-6).build(net.feature_info, num_classes=3)
    recipe = Recipe(name="bad_level", data=ShapesDetectionData(image_size=32, render_size=32, max_size=14),
                    model=BackboneSpec(name="resnet10t") | YoloV1(level=-6), loss=YoloV1Loss())
    with pytest.raises(RecipeError, match=r"model\.head\.level: -6 .*-5\.\.4"):  # through the engine: its path
        check_model(recipe)


def test_sizes_grow_width_and_depth():
    from zoo.recipe import BackboneSpec

    info = BackboneSpec(name="resnet10t").build().feature_info
    counts = [sum(p.numel() for p in Yolo(size=s).build(info, num_classes=3).parameters()) for s in SIZES]
    assert counts == sorted(counts) and len(set(counts)) == len(SIZES)


@pytest.mark.parametrize("backbone", ["resnet10t", "resnet20", "mobilenetv3_small_050"])
@pytest.mark.parametrize("head,loss", [(Yolo(size="nano"), YoloLoss()), (YoloV1(grid=4, hidden=16), YoloV1Loss()),
                                       (Localizer(hidden=16), None)], ids=["yolo", "yolov1", "localizer"])
def test_every_head_works_on_several_backbones(backbone, head, loss):
    from heads import LocalizationLoss
    from zoo.recipe import BackboneSpec

    net = BackboneSpec(name=backbone).build()
    module = head.build(net.feature_info, num_classes=3)
    images = torch.rand(2, 3, 32, 32)
    outputs = module(net(images), images)
    targets = [_target([[2, 2, 15, 15]], [0], (32, 32)), _target([[5, 15, 25, 30], [20, 1, 30, 10]], [2, 1], (32, 32))]
    terms = (loss or LocalizationLoss()).build(module)(outputs, targets)
    sum(terms.values()).backward()
    if loss is not None:
        assert outputs["boxes"].shape[0] == 2 and outputs["scores"].shape[-1] == 3
        context = HeadContext("", head, module, ("a", "b", "c"))
        assert len(DETECTION.predict(outputs, context, Geometry(input_size=(32, 32)))) == 2
    assert all(math.isfinite(float(v.detach())) for v in terms.values())


# --- through the engine -------------------------------------------------------------------------------------------

def test_train_eval_predict_a_tiny_detector(tmp_path):
    from PIL import Image

    from zoo.data.detection import ShapesDetectionData
    from zoo.engine import evaluate, predict, train
    from zoo.recipe import BackboneSpec, Recipe, Trainer

    recipe = Recipe(name="tiny_detect", data=ShapesDetectionData(num_images=24, batch_size=4, num_workers=0,
                                                                 image_size=32, render_size=32, max_size=14),
                    model=BackboneSpec(name="resnet10t") | Yolo(size="nano"), loss=YoloLoss(),
                    trainer=Trainer(max_epochs=1, accelerator="cpu", devices=1, limit_train_batches=1))
    metrics = train(recipe, tmp_path / "run")
    assert {"map", "map50", "ap/circle"} <= set(metrics)
    checkpoint = tmp_path / "run" / "best.ckpt"
    assert "map" in evaluate(checkpoint, split="val", out=tmp_path / "eval")
    assert (tmp_path / "eval" / "pr_curves.png").is_file()
    picture = tmp_path / "wide.png"
    Image.new("RGB", (80, 40), (40, 40, 40)).save(picture)
    out = tmp_path / "pred"
    results = predict(checkpoint, [picture], out=out,
                      overrides={"model.head.score_threshold": 0.0, "model.head.max_detections": 3})
    assert len(results[0]["detections"]) == 3
    for d in results[0]["detections"]:  # boxes in the original 80x40 image
        assert 0 <= d["box"][0] <= d["box"][2] <= 80 and 0 <= d["box"][1] <= d["box"][3] <= 40
    rows = json.loads((out / "detections.json").read_text())
    assert len(rows) == 3 and {r["image_id"] for r in rows} == {1}
    assert len(list((out / "images").glob("*.png"))) == 1


def test_drawing_shows_predictions_and_truth_apart():
    prediction = {"detections": [{"class": "b", "index": 1, "score": 0.9, "box": [4, 4, 20, 20]}]}
    image = np.zeros((32, 32, 3), np.uint8)
    alone = DETECTION.draw(image, prediction, None, ["a", "b"])
    with_truth = DETECTION.draw(image, prediction, _target([[10, 10, 30, 30]], [0], (32, 32)), ["a", "b"])
    assert alone.shape == with_truth.shape and alone.any()
    assert (with_truth == 255).all(-1).sum() > (alone == 255).all(-1).sum()  # the true box, in white
