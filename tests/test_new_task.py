"""docs/new_task.md's example runs as written: a task added without touching the engine, alone and next to another
head."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heads import Classifier, CrossEntropy
from zoo.data import DigitsData
from zoo.engine import predict, train
from zoo.recipe import BackboneSpec, Losses, Recipe, Trainer

DOC = Path(__file__).parent.parent / "docs" / "new_task.md"
TINY = Trainer(max_epochs=1, accelerator="cpu", devices=1, limit_train_batches=2, limit_val_batches=1,
               limit_test_batches=1, log_every_n_steps=1)


@pytest.fixture(scope="module")
def example() -> dict:
    """The names the doc's first code block defines (the task, its specs); the second block is the recipes."""
    first, second = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)[:2]
    module = types.ModuleType("heads_doc_mean_colour")  # a real module: spec type hints resolve in its namespace
    sys.modules[module.__name__] = module
    names = module.__dict__
    exec(compile(first, str(DOC), "exec"), names)  # noqa: S102  (our own documentation)
    names.update(Recipe=Recipe, DigitsData=DigitsData, BackboneSpec=BackboneSpec, Classifier=Classifier,
                 CrossEntropy=CrossEntropy, Losses=Losses, Trainer=Trainer)
    exec(compile(second, str(DOC), "exec"), names)  # noqa: S102
    return names


def test_the_new_task_trains_alone(example, tmp_path):
    recipe = example["recipe"].override(**{"trainer": TINY, "data.num_workers": 0})
    metrics = train(recipe, tmp_path)
    assert set(metrics) == {"mae"} and 0 <= metrics["mae"] <= 1


def test_the_new_task_trains_next_to_a_classifier(example, tmp_path):
    joint = example["joint"].override(**{"trainer": dataclasses.replace(TINY, monitor="cls/top1"),
                                         "data.num_workers": 0})
    metrics = train(joint, tmp_path)
    assert {"cls/top1", "colour/mae"} <= set(metrics)
    logged = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/colour/l1", "val/colour/mae", "val/cls/top1"} <= set(logged)
    picture = tmp_path / "digit.png"
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(picture)
    (result,) = predict(tmp_path / "best.ckpt", [picture])
    assert set(result) == {"image", "cls", "colour"} and len(result["colour"]["mean_colour"]) == 1
    assert json.dumps(result)
