"""Ensembles (``zoo eval A.ckpt B.ckpt``, ``zoo predict A.ckpt B.ckpt IMAGES``, ``zoo.load([A, B])``): a model with
itself is the model, each task's combination is what it says, and members that do not fit together are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import zoo
from heads.classification import average_probabilities
from heads.detection import decode_detections, pool_detections
from tests.conftest import tiny_digits_recipe
from zoo.cli import main
from zoo.engine import evaluate
from zoo.engine.module import ZooModule
from zoo.ensemble import check_members, evaluate_ensemble
from zoo.errors import ZooError


def test_an_ensemble_of_a_model_with_itself_scores_as_the_model(trained_checkpoint, tmp_path, capsys):
    single = evaluate(trained_checkpoint, split="val")
    pair = evaluate_ensemble([trained_checkpoint, trained_checkpoint], split="val")
    limited = {"trainer.limit_test_batches": 2}  # the batches zoo eval reads: the same for an ensemble
    assert evaluate_ensemble([trained_checkpoint] * 2, overrides=limited) == evaluate(trained_checkpoint,
                                                                                       overrides=limited)
    assert pair.keys() == single.keys() and pair["top1"] == single["top1"] and pair["top5"] == single["top5"]
    assert main(["eval", str(trained_checkpoint), str(trained_checkpoint), "--split", "val",
                 "--json", str(tmp_path / "m.json")]) == 0
    assert "ensemble of" in capsys.readouterr().out
    assert json.loads((tmp_path / "m.json").read_text())["top1"] == single["top1"]


def test_predictions_of_a_self_ensemble_are_the_model_s(trained_checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(3)]
    alone = zoo.load(trained_checkpoint).predict(images)
    paired = zoo.load([trained_checkpoint, trained_checkpoint]).predict(images)
    for a, b in zip(alone, paired):
        assert [c["index"] for c in a["top_k"]] == [c["index"] for c in b["top_k"]]
        assert np.allclose([c["prob"] for c in a["top_k"]], [c["prob"] for c in b["top_k"]], atol=2e-6)

    from PIL import Image

    Image.fromarray(images[0]).save(tmp_path / "x.png")
    assert main(["predict", str(trained_checkpoint), str(trained_checkpoint), str(tmp_path / "x.png")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed) == 1 and printed[0]["top_k"][0]["index"] == alone[0]["top_k"][0]["index"]


def test_probabilities_are_averaged_and_detections_pooled_into_one_nms():
    torch.manual_seed(0)
    a, b = torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4)  # classification [N, K] or segmentation [N, K, h, w]
    mean = (a.softmax(1) + b.softmax(1)) / 2
    assert torch.allclose(average_probabilities([a, b]).softmax(1), mean, atol=1e-6)
    assert torch.allclose(average_probabilities([a, a]).softmax(1), a.softmax(1), atol=1e-6)

    corners = torch.rand(2, 30, 2) * 40
    outputs = {"boxes": torch.cat([corners, corners + 5 + torch.rand(2, 30, 2) * 20], -1),
               "scores": torch.rand(2, 30, 3)}
    for alone, pooled in zip(decode_detections(outputs), decode_detections(pool_detections([outputs, outputs]))):
        assert torch.equal(alone.boxes, pooled.boxes) and torch.equal(alone.labels, pooled.labels)
    shifted = {"boxes": outputs["boxes"] + 200, "scores": outputs["scores"]}  # no overlap: both models' boxes stay
    for alone, pooled in zip(decode_detections(outputs, max_detections=500),
                             decode_detections(pool_detections([outputs, shifted]), max_detections=500)):
        assert len(pooled.boxes) == 2 * len(alone.boxes)


def test_members_that_differ_are_refused():
    recipe = tiny_digits_recipe()
    ten = ZooModule(recipe, {"label": [str(d) for d in range(10)]})
    nine = ZooModule(recipe, {"label": [str(d) for d in range(9)]})
    with pytest.raises(ZooError, match="b.ckpt: its heads, tasks or classes differ from a.ckpt"):
        check_members([ten, nine], ["a.ckpt", "b.ckpt"])
    bigger = ZooModule(recipe.override("data.image_size=64"), ten.classes)
    with pytest.raises(ZooError, match="data.image_size is 64"):
        check_members([ten, bigger], ["a.ckpt", "b.ckpt"])


def test_a_task_that_cannot_combine_refuses_ensembles_only(monkeypatch):
    import dataclasses

    from heads.classification import CLASSIFICATION, Classifier, CrossEntropy

    alone = dataclasses.replace(CLASSIFICATION, combine=None)
    monkeypatch.setattr(Classifier, "task", alone)
    monkeypatch.setattr(CrossEntropy, "task", alone)
    module = ZooModule(tiny_digits_recipe(), {"label": [str(d) for d in range(10)]})
    check_members([module], ["a.ckpt"])  # one model is no ensemble
    with pytest.raises(ZooError, match="model.head: the classification task has no way to combine"):
        check_members([module, module], ["a.ckpt", "a.ckpt"])


# ---------------------------------------------------------------- test-time augmentation (--tta hflip)

def _fake(spec):
    """What the TTA helpers read of a module: whether it has one head, and the head's spec."""
    from types import SimpleNamespace

    return SimpleNamespace(model=SimpleNamespace(single=True), contexts={"": SimpleNamespace(spec=spec)})


def test_hflip_tta_on_a_flip_symmetric_input_is_the_plain_prediction(trained_checkpoint, tmp_path, capsys):
    half = np.random.default_rng(0).integers(0, 256, (32, 16), dtype=np.uint8)
    symmetric = np.concatenate([half, half[:, ::-1]], axis=1)
    plain = zoo.load(trained_checkpoint).predict(symmetric)
    flipped = zoo.load(trained_checkpoint, tta=["hflip"]).predict(symmetric)
    assert [c["index"] for c in plain["top_k"]] == [c["index"] for c in flipped["top_k"]]
    assert np.allclose([c["prob"] for c in plain["top_k"]], [c["prob"] for c in flipped["top_k"]], atol=2e-6)
    asymmetric = np.random.default_rng(1).integers(0, 256, (32, 32), dtype=np.uint8)
    assert zoo.load(trained_checkpoint, tta=["hflip"]).predict(asymmetric) != \
        zoo.load(trained_checkpoint).predict(asymmetric)  # on other inputs the flipped view does count
    assert main(["eval", str(trained_checkpoint), "trainer.limit_test_batches=2", "--tta", "hflip"]) == 0
    assert "with --tta hflip" in capsys.readouterr().out


def test_hflip_maps_boxes_and_masks_back_exactly_on_an_asymmetric_input():
    from heads.detection import YoloV1
    from heads.segmentation import UNet
    from zoo.ensemble import view_outputs

    images = torch.zeros(2, 1, 8, 12)
    images[0, 0, :, 2] = 1.0  # a bright column at x = 2 (and at x = 9 in the second image): far from symmetric
    images[1, 0, 1:5, 9] = 1.0

    def detector(x: torch.Tensor) -> dict[str, torch.Tensor]:  # a box around each image's bright column
        column = x.sum(dim=(1, 2)).argmax(dim=1).float()  # [N]
        boxes = torch.stack([column, torch.zeros_like(column), column + 1, torch.full_like(column, 8.0)], -1)
        return {"boxes": boxes[:, None], "scores": torch.ones(len(x), 1, 2)}

    plain, back = view_outputs(_fake(YoloV1()), detector, images, ["hflip"])
    assert plain["boxes"][:, 0].tolist() == [[2, 0, 3, 8], [9, 0, 10, 8]]
    assert torch.equal(back["boxes"], plain["boxes"]) and torch.equal(back["scores"], plain["scores"])

    def segmenter(x: torch.Tensor) -> torch.Tensor:  # per-pixel logits: the image and its negative
        return torch.cat([x, -x], dim=1)

    plain, back = view_outputs(_fake(UNet()), segmenter, images, ["hflip"])
    assert torch.equal(back, plain)


def test_tta_is_refused_for_unknown_names_and_tasks_that_cannot_flip_back():
    from heads.captioning import LstmCaptioner
    from heads.classification import Classifier
    from zoo.ensemble import check_tta

    with pytest.raises(ZooError, match="--tta 'vflip': choose from hflip"):
        check_tta(_fake(Classifier()), ["vflip"])
    with pytest.raises(ZooError, match="model.head: the captioning task cannot map a flipped view back"):
        check_tta(_fake(LstmCaptioner()), ["hflip"])
    check_tta(_fake(LstmCaptioner()), [])  # no TTA: nothing to refuse
