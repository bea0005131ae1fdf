"""COCO evaluation: equal to a direct pycocotools run on generated GT/DT pairs, both backends identical, the edge
cases pycocotools gets wrong or crashes on, PR curves, and ``zoo eval --gt --dt``."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json

import numpy as np
import pytest

from zoo.cli import main
from zoo.data.coco import CocoFormatError
from zoo.detection_eval import coco_evaluate, plot_pr_curves, synthetic_coco_pair, to_coco_gt, to_coco_results

CLASSES = ("circle", "square", "triangle")


def generated_pair(seed: int, num_images: int = 40) -> tuple[dict, list[dict]]:
    return synthetic_coco_pair(num_images, classes=CLASSES, seed=seed)


def direct_cocoeval(gt: dict, dt: list[dict], tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """``(stats, precision)`` of the textbook pycocotools run on files."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    (tmp_path / "gt.json").write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp_path / "gt.json"))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(dt), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats, evaluator.eval["precision"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_direct_pycocotools(seed, tmp_path):
    gt, dt = generated_pair(seed)
    stats, precision = direct_cocoeval(gt, dt, tmp_path)
    result = coco_evaluate(gt, dt)
    names = ["map", "map50", "map75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100"]
    assert [result.metrics[n] for n in names] == [float(v) for v in stats[:9]]
    np.testing.assert_array_equal(result.precision, precision)
    assert 0.1 < result.metrics["map50"] < 0.95  # a pair that exercises matching, not a trivial one
    for k, name in enumerate(CLASSES):
        values = precision[:, :, k, 0, -1]
        assert result.metrics[f"ap/{name}"] == pytest.approx(values[values > -1].mean())


@pytest.mark.skipif(importlib.util.find_spec("faster_coco_eval") is None,
                    reason="faster-coco-eval is not installed (pip install 'zoo[fast]')")
@pytest.mark.parametrize("seed", [3, 4])
def test_backends_give_identical_numbers(seed):
    gt, dt = generated_pair(seed)
    ours, fast = coco_evaluate(gt, dt), coco_evaluate(gt, dt, backend="faster_coco_eval")
    assert ours.metrics == pytest.approx(fast.metrics, rel=0, abs=1e-12)  # equal up to float summation order
    np.testing.assert_allclose(ours.precision, fast.precision, rtol=0, atol=1e-12)
    assert coco_evaluate(gt, [], backend="faster_coco_eval").metrics == coco_evaluate(gt, []).metrics


def test_no_detections_give_zero_not_a_crash():
    gt, _ = generated_pair(5)
    gt["categories"].append({"id": 4, "name": "star"})  # a class without any ground truth
    metrics = coco_evaluate(gt, []).metrics
    assert metrics["map"] == metrics["map50"] == metrics["ap/circle"] == 0.0
    assert metrics["ap/star"] == -1.0  # nothing to measure, as pycocotools reports it


def test_annotation_id_zero_is_evaluated_correctly(tmp_path):
    gt = to_coco_gt(images=[(1, 100, 100)], boxes=[np.float32([[10, 10, 50, 50], [60, 60, 90, 95]])],
                    labels=[np.int64([0, 1])], classes=CLASSES)
    dt = to_coco_results(image_ids=[1], boxes=[np.float32([[10, 10, 50, 50], [60, 60, 90, 95]])],
                         scores=[np.float32([0.9, 0.8])], labels=[np.int64([0, 1])])
    gt["annotations"][0]["id"] = 0
    before = json.dumps(gt)
    assert coco_evaluate(gt, dt).metrics["map"] == pytest.approx(1.0)  # perfect detections
    assert json.dumps(gt) == before  # the caller's dict is left as it was
    assert direct_cocoeval(gt, dt, tmp_path)[0][0] < 0.9  # plain pycocotools counts the match with id 0 as a miss


def test_bad_detections_are_named():
    gt, dt = generated_pair(6, num_images=3)
    with pytest.raises(CocoFormatError, match=r"result \[0\] has image_id 77"):
        coco_evaluate(gt, [{**dt[0], "image_id": 77}])
    with pytest.raises(CocoFormatError, match=r"result \[0\] has category_id 9; .*\[1, 2, 3\]"):
        coco_evaluate(gt, [{**dt[0], "category_id": 9}])
    with pytest.raises(CocoFormatError, match=r"result \[0\] is not a box detection"):
        coco_evaluate(gt, [{"image_id": 1}])


def test_pr_curves_are_drawn(tmp_path):
    gt, dt = generated_pair(7)
    path = plot_pr_curves(coco_evaluate(gt, dt), CLASSES, tmp_path / "plots" / "pr.png")
    assert path.is_file() and path.stat().st_size > 1000


def test_cli_eval_gt_dt(tmp_path, capsys):
    gt, dt = generated_pair(8)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dt))
    out = tmp_path / "out" / "metrics.json"
    assert main(["eval", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written == pytest.approx(coco_evaluate(gt, dt).metrics) and "map50" in printed and "ap/square" in printed
    (tmp_path / "empty.json").write_text("[]")
    assert main(["eval", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "empty.json")]) == 0
    assert "map " in capsys.readouterr().out


def test_cli_eval_needs_exactly_one_mode(tmp_path, capsys):
    assert main(["eval"]) == 2
    assert "CHECKPOINT or --gt" in capsys.readouterr().err
    assert main(["eval", "run/best.ckpt", "--gt", "g.json", "--dt", "d.json"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["eval", "--gt", str(tmp_path / "g.json")]) == 2
    assert "--dt" in capsys.readouterr().err
    (tmp_path / "dt.json").write_text("[]")
    assert main(["eval", "--gt", str(tmp_path / "missing.json"), "--dt", str(tmp_path / "dt.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


_GT = {"images": [{"id": 1, "width": 64, "height": 64}], "categories": [{"id": 1, "name": "a"}],
       "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}]}


@pytest.mark.parametrize("field, value, message", [
    ("score", float("nan"), r"result \[0\] has score nan"),
    ("score", "high", r"result \[0\] has score 'high'"),
    ("bbox", [1, 2, 3], r"result \[0\] has bbox \[1, 2, 3\]; a bbox is \[x, y, w, h\]"),
    ("bbox", [1, 2, 3, 4, 5], "four numbers"),
    ("bbox", None, "four numbers"),
    ("bbox", ["1", 2, 3, 4], "four numbers"),
    ("bbox", [1, 2, float("nan"), 4], "must be finite"),
    ("bbox", [1, float("inf"), 3, 4], "must be finite"),
])
def test_bad_detections_are_refused_naming_the_entry(field, value, message):
    detection = {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9, field: value}
    with pytest.raises(CocoFormatError, match=message):
        coco_evaluate(_GT, [detection], dt_source="dt.json")


def test_an_all_nan_score_file_no_longer_scores_a_perfect_map():
    with pytest.raises(CocoFormatError, match="score nan"):
        coco_evaluate(_GT, [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": float("nan")}])
    bad_gt = json.loads(json.dumps(_GT))
    bad_gt["annotations"][0]["bbox"] = [10, float("nan"), 20, 20]
    with pytest.raises(CocoFormatError, match=r"gt.json: annotation \[0\] \(id 1\) has bbox"):
        coco_evaluate(bad_gt, [], gt_source="gt.json")


def test_negative_sized_detections_are_evaluated_as_pycocotools_does_with_a_counted_warning():
    detection = {"image_id": 1, "category_id": 1, "bbox": [10, 10, -20, 20], "score": 0.9}
    with pytest.warns(UserWarning, match="1 detection\\(s\\) have a negative width or height"):
        metrics = coco_evaluate(_GT, [detection]).metrics
    assert metrics["map"] == 0.0
