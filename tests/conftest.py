"""Shared fixtures: a tiny recipe, a tiny image folder, and a trained tiny checkpoint (built once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heads import Classifier, CrossEntropy
from zoo.data import DigitsData, ImageFolderData
from zoo.recipe import BackboneSpec, Recipe, Trainer

os.environ.setdefault("ZOO_CACHE", str(Path(__file__).parent.parent / ".pytest_cache" / "zoo"))


def tiny_digits_recipe(**overrides) -> Recipe:
    """LeNet-5 on digits, a few batches: the shared tiny fixture model and dataset."""
    recipe = Recipe(
        name="tiny",
        data=DigitsData(batch_size=32),
        model=BackboneSpec(name="lenet5", in_chans=1) | Classifier(hidden=(16,)),
        loss=CrossEntropy(),
        trainer=Trainer(max_epochs=1, accelerator="cpu", devices=1, limit_train_batches=4, limit_val_batches=2),
    )
    return recipe.override(**overrides)


def write_class_folders(root: Path, classes: dict[str, int], *, size: int = 16, mode: str = "RGB") -> Path:
    """``root/<class>/<i>.png`` images whose mean brightness depends on the class (so they are learnable)."""
    rng = np.random.default_rng(0)
    for c, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            base = 40 + 150 * c / max(1, len(classes) - 1)
            pixels = np.clip(base + rng.normal(0, 10, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).convert(mode).save(root / name / f"{i}.png")
    return root


def tiny_folder_recipe(root: Path, **overrides) -> Recipe:
    recipe = Recipe(
        name="tiny_folder",
        data=ImageFolderData(root=str(root), image_size=16, batch_size=4, num_workers=0, val_fraction=0.25,
                             test_fraction=0.25),
        model=BackboneSpec(name="resnet10t") | Classifier(),
        loss=CrossEntropy(),
        trainer=Trainer(max_epochs=1, accelerator="cpu", devices=1, limit_train_batches=2, limit_val_batches=1),
    )
    return recipe.override(**overrides)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    """A run of the tiny digits recipe; tests may read but not modify its folder."""
    from zoo.engine import train

    out = tmp_path_factory.mktemp("run")
    train(tiny_digits_recipe(), out)
    return out / "best.ckpt"
