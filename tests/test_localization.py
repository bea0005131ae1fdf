"""Single-object localization: the loss terms on hand-made targets, the metrics, boxes mapped back to the original
image (stretch and letterbox) and one tiny run through the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heads import LOCALIZATION, LocalizationLoss, Localizer
from heads.detection import boxes_to_original
from heads.localization import LocalizationMetrics, main_object
from zoo.backbones.base import FeatureInfo
from zoo.data.targets import compose_kwargs_for
from zoo.recipe import Augment
from zoo.task import Geometry, HeadContext


def _target(boxes, labels, size=(64, 64)) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.long), "image_id": 0, "orig_size": size, "size": size}


TARGETS = [_target([[8, 16, 40, 48]], [1]), _target([[0, 0, 32, 16], [30, 30, 60, 62]], [0, 2])]


def _outputs(boxes01, classes) -> dict:
    logits = torch.full((len(classes), 3), -5.0)
    logits[torch.arange(len(classes)), torch.tensor(classes)] = 5.0
    return {"logits": logits.requires_grad_(True), "box": torch.tensor(boxes01).requires_grad_(True)}


def test_main_object_is_the_largest_box_relative_to_the_input():
    boxes, labels, present = main_object(TARGETS + [_target([], [])], torch.device("cpu"))
    assert labels.tolist()[:2] == [1, 2] and present.tolist() == [True, True, False]
    assert torch.allclose(boxes[1], torch.tensor([30, 30, 60, 62]) / 64)


@pytest.mark.parametrize("box_loss", ["l2", "huber", "giou"])
def test_perfect_box_gives_zero_box_loss_and_a_wrong_one_does_not(box_loss):
    loss = LocalizationLoss(box_loss=box_loss).build(None)
    true01 = [[8 / 64, 16 / 64, 40 / 64, 48 / 64], [30 / 64, 30 / 64, 60 / 64, 62 / 64]]
    perfect = loss(_outputs(true01, [1, 2]), TARGETS)
    assert float(perfect["box"].detach()) < 1e-5
    assert float(perfect["cls"].detach()) < 1e-3
    wrong = loss(_outputs([[0.5, 0.5, 0.9, 0.9], [0.0, 0.0, 0.3, 0.3]], [1, 2]), TARGETS)
    assert float(wrong["box"].detach()) > 1e-3


def test_background_images_give_a_finite_zero_that_backpropagates():
    outputs = _outputs([[0.1, 0.1, 0.5, 0.5]], [0])
    terms = LocalizationLoss().build(None)(outputs, [_target([], [])])
    total = sum(terms.values())
    assert float(total.detach()) == 0.0
    total.backward()
    assert outputs["box"].grad is not None


def test_metrics_count_class_and_iou():
    metrics = LocalizationMetrics(["a", "b", "c"])
    # image 1: right class, exact box; image 2: wrong class, box half as wide (IoU 0.5 exactly → counts as ≥ 0.5)
    box2 = [30 / 64, 30 / 64, 45 / 64, 62 / 64]
    metrics.update(_outputs([[8 / 64, 16 / 64, 40 / 64, 48 / 64], box2], [1, 0]), TARGETS)
    result = metrics.compute()
    assert result["acc"] == pytest.approx(0.5)
    assert result["mean_iou"] == pytest.approx(0.75, abs=1e-4)
    assert result["acc_iou50"] == pytest.approx(0.5)
    metrics.update(_outputs([[0.0, 0.0, 0.1, 0.1]], [1]), [_target([], [])])  # background: not counted
    assert metrics.compute() == result


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
@pytest.mark.parametrize("height,width", [(77, 200), (201, 63)])
def test_boxes_map_back_to_the_original_image(resize, height, width):
    """A box sent through the recipe pipeline (as the data loaders do) comes back to where it was."""
    from heads import DETECTION

    image = np.zeros((height, width, 3), np.uint8)
    original = np.array([[0.1 * width, 0.2 * height, 0.7 * width, 0.9 * height]], np.float32)
    pipeline = Augment(resize=resize).compose(train=False, size=64, mean=(0.5,) * 3, std=(0.25,) * 3,
                                              **compose_kwargs_for([DETECTION.target]))
    out = pipeline(image=image, bboxes=original, labels=np.array([0]))
    back = boxes_to_original(torch.tensor(np.asarray(out["bboxes"]), dtype=torch.float32), input_size=(64, 64),
                             image_size=(height, width), resize=resize)
    assert torch.allclose(back, torch.tensor(original), atol=0.01)


def test_predict_returns_class_and_box_in_original_pixels():
    outputs = _outputs([[0.25, 0.25, 0.75, 0.5]], [2])
    spec = Localizer(hidden=16)
    head = HeadContext("", spec, spec.build([FeatureInfo(channels=8, stride=32, module="x")], num_classes=3),
                       ("a", "b", "c"))
    geometry = Geometry(input_size=(64, 64), image_sizes=[(32, 128)], resize="stretch")
    (result,) = LOCALIZATION.predict(outputs, head, geometry)
    assert result["class"] == "c" and result["index"] == 2 and result["prob"] > 0.99
    assert result["box"] == [32.0, 8.0, 96.0, 16.0]
    picture = LOCALIZATION.draw(np.zeros((32, 128, 3), np.uint8), result, None, ["a", "b", "c"])
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.any()


def test_train_and_predict_a_tiny_localizer(tmp_path):
    from PIL import Image

    from zoo.data.detection import ShapesDetectionData
    from zoo.engine import predict, train
    from zoo.recipe import BackboneSpec, Recipe, Trainer

    recipe = Recipe(name="tiny_localize", data=ShapesDetectionData(num_images=20, max_objects=1, batch_size=4,
                                                                   num_workers=0, image_size=32, render_size=32,
                                                                   max_size=14),
                    model=BackboneSpec(name="resnet10t") | Localizer(hidden=16), loss=LocalizationLoss(),
                    aug=Augment(resize="letterbox"),
                    trainer=Trainer(max_epochs=1, accelerator="cpu", devices=1, limit_train_batches=2))
    metrics = train(recipe, tmp_path / "run")
    assert {"acc", "mean_iou", "acc_iou50"} <= set(metrics)
    picture = tmp_path / "wide.png"
    Image.new("RGB", (80, 40), (40, 40, 40)).save(picture)
    (result,) = predict(tmp_path / "run" / "best.ckpt", [picture], out=tmp_path / "pred")
    x1, y1, x2, y2 = result["box"]
    assert 0 <= x1 <= x2 <= 80 and 0 <= y1 <= y2 <= 40 and result["class"] in {"circle", "square", "triangle"}
    assert len(list((tmp_path / "pred" / "images").glob("*.png"))) == 1
