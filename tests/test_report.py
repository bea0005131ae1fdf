"""The run report (report.html), its worst examples, curves.png, zoo report, the epoch line and TensorBoard's share.

The browser test loads the report in headless Chromium (Debian's chromium, driven by Playwright): every picture
decodes, the console stays clean, and the numbers shown are metrics.json's.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heads.classification import judge_class
from heads.detection import judge_detections
from heads.segmentation import judge_masks
from zoo.cli import main
from zoo.engine import load_module
from zoo.engine.datamodule import ZooDataModule
from zoo.engine.examples import save_worst_examples
from zoo.engine.progress import show_progress_bar
from zoo.engine.run import prepare_data
from zoo.report import _metrics_tables, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _shown_metrics(page: str) -> dict[str, float]:
    return {name: float(value) for name, value in re.findall(r'data-metric="([^"]+)">([-0-9.]+)<', page)}


def _images(page: str) -> list[str]:
    return re.findall(r'<img[^>]+src="([^"]+)"', page)


def test_training_writes_a_self_contained_report_showing_the_test_metrics(trained_checkpoint):
    run = trained_checkpoint.parent
    page = (run / "report.html").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    shown = _shown_metrics(page)
    assert set(shown) == set(metrics)  # every test metric, per-class ones included, and nothing else
    assert all(shown[k] == pytest.approx(v, abs=5e-5) for k, v in metrics.items())
    sources = _images(page)
    assert len(sources) >= 5  # curves, confusion matrix, PR curves, prediction grid, worst examples
    for src in sources:  # embedded, decodable PNGs: the file alone is the report
        assert src.startswith("data:image/png;base64,")
        assert Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).size[0] > 0
    assert not re.search(r"(src|href)=\"https?://", page) and "<script" not in page
    for part in ("Training curves", "worst examples", "least sure right", "No input was skipped", "optim.lr"):
        assert part in page
    assert (run / "curves.png").is_file()


def test_worst_examples_are_the_highest_ranked_of_the_split_each_drawn_with_its_note(trained_checkpoint, tmp_path):
    module = load_module(trained_checkpoint)
    splits = prepare_data(module.recipe)
    loader = ZooDataModule(module.recipe, splits).split_loader("test")
    entries = save_worst_examples(module, loader, tmp_path, count=3)
    groups = {e["group"]: e for e in entries}
    assert set(groups) <= {"confidently wrong", "least sure right"} and "least sure right" in groups
    # recompute every image's verdict independently: the kept ones are the top 3 of their group, worst first
    verdicts: dict[str, list[float]] = {}
    with torch.no_grad():
        for images, targets in loader:
            probs = module(images).softmax(1)
            for p, t in zip(probs, targets["label"].value):
                k = int(p.argmax())
                prediction = {"top_k": [{"class": str(k), "index": k, "prob": round(float(p[k]), 6)}]}
                group, badness, _ = judge_class(prediction, int(t), module.classes["label"])
                verdicts.setdefault(group, []).append(badness)
    for group, entry in groups.items():
        kept = [e["badness"] for e in entry["examples"]]
        assert kept == sorted(kept, reverse=True)
        np.testing.assert_allclose(kept, sorted(verdicts[group], reverse=True)[:3], atol=1e-5)
        assert Image.open(tmp_path / entry["picture"]).size[0] > 0
    assert json.loads((tmp_path / "worst.json").read_text()) == entries


def test_judges_count_missed_and_false_boxes_and_rank_masks_by_iou():
    truth = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([0, 1])}
    found = {"detections": [{"class": "a", "index": 0, "score": 0.9, "box": [0, 0, 10, 11]},  # found
                            {"class": "a", "index": 0, "score": 0.8, "box": [20, 20, 30, 30]},  # wrong class: false
                            {"class": "a", "index": 0, "score": 0.7, "box": [0, 0, 10, 10]}]}  # duplicate: false
    assert judge_detections(found, truth, ("a", "b"))[1:] == (3, "1 missed, 2 false of 2 true")
    perfect = {"detections": [{"class": "a", "index": 0, "score": 0.9, "box": [0, 0, 10, 10]},
                              {"class": "b", "index": 1, "score": 0.9, "box": [20, 20, 30, 30]}]}
    assert judge_detections(perfect, truth, ("a", "b")) is None
    from heads.segmentation import _encode

    mask = np.zeros((8, 8), np.uint8)
    mask[:4] = 1
    half = mask.copy()
    half[:, 4:] = 0  # class 1 predicted on half of its 32 pixels: IoU 16/32 for it, 32/48 for the background
    assert judge_masks(_encode(mask, ("bg", "x")), mask, ("bg", "x"))[1] == pytest.approx(0.0)
    assert judge_masks(_encode(half, ("bg", "x")), mask, ("bg", "x"))[1] == pytest.approx(1 - (16 / 32 + 32 / 48) / 2)
    wrong = {"top_k": [{"class": "b", "index": 1, "prob": 0.7}]}
    assert judge_class(wrong, 0, ("a", "b")) == ("confidently wrong", 0.7, "b 0.70, true a")


def test_metrics_of_named_heads_get_a_table_each():
    page = _metrics_tables({"loss": 1.0, "det/map50": 0.5, "det/ap/red": 0.4, "seg/miou": 0.25}, ["det", "seg"])
    assert "head det" in page and "head seg" in page
    assert _shown_metrics(page) == {"det/map50": 0.5, "det/ap/red": 0.4, "seg/miou": 0.25}


def test_zoo_report_rebuilds_the_report_of_an_interrupted_run_from_its_folder(trained_checkpoint, tmp_path, capsys):
    run = tmp_path / "interrupted"
    shutil.copytree(trained_checkpoint.parent, run)
    for name in ("evaluation.json", "metrics.json", "worst.json", "report.html", "curves.png"):
        (run / name).unlink()
    for picture in run.glob("*.png"):
        picture.unlink()
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "No evaluation yet" in page and "last.ckpt" in page
    assert (run / "curves.png").is_file() and len(_images(page)) == 1  # the curves, redrawn from the logs
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_zoo_eval_out_writes_the_report_of_that_evaluation(trained_checkpoint, tmp_path):
    assert main(["eval", str(trained_checkpoint), "--split", "val", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    assert evaluation["split"] == "val" and "val split metrics" in page
    assert _shown_metrics(page)["top1"] == pytest.approx(evaluation["metrics"]["top1"], abs=5e-5)
    assert "optim.lr" in page  # the checkpoint's recipe, since this folder has no recipe.txt


def test_tensorboard_gets_the_test_metrics_the_pictures_and_the_recipe(trained_checkpoint):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = trained_checkpoint.parent / "logs"
    tags = {"scalars": set(), "images": set()}
    for events in logs.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        for kind in tags:
            tags[kind] |= set(acc.Tags()[kind])
    assert {"test/top1", "test/top5"} <= tags["scalars"]
    assert {"test/predictions_test", "test/worst_least_sure_right"} <= tags["images"]
    hparams = (logs / "hparams.yaml").read_text()
    assert "optim.lr:" in hparams and "monitor: val/top1 (max)" in hparams


def test_progress_bar_setting_and_environment(monkeypatch):
    monkeypatch.delenv("ZOO_PROGRESS", raising=False)
    assert show_progress_bar("bar") and not show_progress_bar("lines")
    assert not show_progress_bar("auto")  # pytest's stderr is no terminal, and this is no notebook
    monkeypatch.setenv("ZOO_PROGRESS", "bar")
    assert show_progress_bar("auto") and not show_progress_bar("lines")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here: `make setup` installs Debian's chromium where it "
                                             "can (root and apt-get); elsewhere install it to run this test")
def test_report_in_a_real_browser(trained_checkpoint, tmp_path):
    pytest.importorskip("playwright", reason="playwright is in the dev extra: pip install -e '.[dev]'")
    from playwright.sync_api import sync_playwright

    run = trained_checkpoint.parent
    metrics = json.loads((run / "metrics.json").read_text())
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: errors.append(f"request {r.url}") if not r.url.startswith(("file:", "data:"))
                else None)
        page.goto((run / "report.html").resolve().as_uri(), wait_until="load")
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        shown = page.eval_on_selector_all("[data-metric]", "cells => cells.map(c => [c.dataset.metric, c.textContent])")
        shot = Path(os.environ.get("ZOO_REPORT_SCREENSHOT", tmp_path / "report.png"))
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert widths and all(w > 0 for w in widths), widths
    assert errors == []
    assert {k: round(float(v), 4) for k, v in shown} == {k: round(v, 4) for k, v in metrics.items()}
    assert Image.open(shot).size[1] > 900
