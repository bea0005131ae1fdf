"""Data parallelism on 2 CPU processes (gloo): validation metrics equal one process's on the same weights and split,
for classification, detection, segmentation and captioning; the test pass runs once; the run folder is written once.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.engine import evaluate

DDP = ["trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.max_epochs=1",
       "trainer.limit_train_batches=2", "data.num_workers=0"]


def _ddp_train(recipe: str, out: Path, *extra: str) -> str:
    run = subprocess.run([sys.executable, "-m", "zoo.cli", "train", recipe, *DDP, *extra, "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def _logged_val(out: Path) -> dict[str, float]:
    rows = [r for r in csv.DictReader((out / "logs" / "metrics.csv").open()) if r.get("val/loss")]
    assert len(rows) == 1  # one validation, logged once
    return {k.removeprefix("val/"): float(v) for k, v in rows[0].items()
            if k.startswith("val/") and v != "" and not k.endswith("loss")}


@pytest.mark.parametrize("recipe, extra", [
    ("recipes/classify_digits_lenet5.py", []),
    ("recipes/multitask_shapes.py", ["data.num_images=80", "data.batch_size=8"]),  # detection, segmentation, captions
])
def test_two_process_validation_metrics_equal_one_process_on_the_same_weights(tmp_path, recipe, extra):
    stdout = _ddp_train(recipe, tmp_path, *extra)
    assert stdout.count("test metrics of") == 1  # the post-training test pass runs once
    assert stdout.count("epoch 1/1") == 1
    logged = _logged_val(tmp_path)
    single = evaluate(tmp_path / "last.ckpt", split="val")  # one process, the weights validation saw
    assert set(logged) <= set(single) and len(logged) >= 3
    for name, value in logged.items():
        if math.isnan(single[name]):
            assert math.isnan(value), name
        else:
            assert value == pytest.approx(single[name], abs=1e-6), name
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "data.json").is_file()
