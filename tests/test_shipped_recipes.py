"""Generated from recipes/: every shipped recipe checks, takes the common overrides, and runs one tiny step."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import write_class_folders
from tests.test_segmentation import write_mask_folder
from zoo.engine import train
from zoo.engine.run import check_model
from zoo.errors import ZooError
from zoo.recipe import load_recipe
from zoo.viz import visualize

RECIPES = sorted(p for p in Path("recipes").glob("*.py") if p.name != "__init__.py")
# What a recipe that reads a folder needs to run in a test, by the data adapter's fields.
COMMON = ["trainer.max_epochs=3", "data.batch_size=64", "optim.lr=0.01", "model.backbone.name=resnet18"]


def _needs_root(recipe) -> bool:
    return hasattr(recipe.data, "root")


def _root(recipe, folder: Path, mask_folder: Path) -> Path:
    """Class folders, or images/ + masks/ for an adapter whose samples carry a mask."""
    return mask_folder if "mask" in recipe.data.targets else folder


# Extra overrides a recipe needs for its smoke run (a rendered set small enough to render in a second).
TINY = {"segment_shapes_unet": ["data.num_images=40"], "segment_shapes_fcn": ["data.num_images=40"],
        "localize_shapes": ["data.num_images=40"], "detect_shapes_yolov1": ["data.num_images=40"],
        "detect_shapes_yolo": ["data.num_images=40"], "detect_coco": ["data.image_size=32"],
        "caption_shapes_lstm": ["data.num_images=40", "model.head.max_length=5"],
        "caption_shapes_transformer": ["data.num_images=40", "model.head.max_length=5"],
        "caption_coco": ["data.image_size=32", "data.min_freq=1", "model.head.max_length=5"],
        "multitask_shapes": ["data.num_images=40", "model.heads.cap.max_length=5"],
        # its weights are a detector's run folder (tests/test_finetune.py fine-tunes from a tiny one)
        "finetune_shapes_classifier": ["data.num_images=40", "model.weights=None"]}


def _coco_paths(recipe, coco: Path) -> list[str]:
    """A detection recipe on the user's COCO files gets a tiny rendered COCO set (boxes in annotations.json), a
    captioning recipe the same images' captions as a COCO captions file."""
    if not hasattr(recipe.data, "train_json"):
        return []
    if "caption" in recipe.data.targets:
        data = json.loads((coco / "annotations.json").read_text())
        json_file = coco / "captions.json"
        json_file.write_text(json.dumps({"images": data["images"], "annotations": data["captions"]}))
    elif "boxes" in recipe.data.targets:
        json_file = coco / "annotations.json"
    else:
        return []
    return [f"data.images={coco}", f"data.train_json={json_file}", f"data.val_json={json_file}"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_class_folders(tmp_path_factory.mktemp("folder"), {"a": 6, "b": 6, "c": 6})


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    from zoo.data.shapes import ShapesConfig, render_shapes

    return render_shapes(ShapesConfig(num_images=12, image_size=32, max_objects=3, max_size=14),
                         tmp_path_factory.mktemp("coco"))


@pytest.fixture(scope="module")
def mask_folder(tmp_path_factory) -> Path:
    return write_mask_folder(tmp_path_factory.mktemp("masks"), 10, size=(32, 40))


def test_there_are_recipes():
    assert len(RECIPES) >= 2


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_checks_and_takes_common_overrides(path, folder, mask_folder, coco):
    recipe = load_recipe(path)
    root = [f"data.root={_root(recipe, folder, mask_folder)}"] if _needs_root(recipe) else []
    root += _coco_paths(recipe, coco)
    changed = load_recipe(path, COMMON + root)
    assert (changed.trainer.max_epochs, changed.data.batch_size, changed.optim.lr) == (3, 64, 0.01)
    assert changed.model.backbone.name == "resnet18"
    assert load_recipe(path, ["model.backbone.pretrained=/weights/w.safetensors"]).model.backbone.pretrained
    changed.data.preflight()
    check_model(changed)  # what `zoo check` builds: the model on the meta device, with a dummy batch


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_one_tiny_step(path, folder, mask_folder, coco, tmp_path):
    recipe = load_recipe(path)
    small = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
             "trainer.limit_test_batches=1",
             "trainer.accelerator=cpu", "trainer.devices=1", "data.batch_size=4", "data.num_workers=0"]
    if _needs_root(recipe):
        small += [f"data.root={_root(recipe, folder, mask_folder)}", "data.image_size=32", "model.backbone.name=resnet10t",
                  "data.val_fraction=0.2", "data.test_fraction=0.2"]
    small += _coco_paths(recipe, coco)
    metrics = train(load_recipe(path, small + TINY.get(path.stem, [])), tmp_path)
    assert recipe.monitor()[0] in metrics
    assert (tmp_path / "best.ckpt").is_file()
    # every recipe's run gets its report: the test metrics shown, every picture embedded, the curves drawn
    page = (tmp_path / "report.html").read_text()
    shown = dict(re.findall(r'data-metric="([^"]+)">([-0-9.]+|nan)<', page))
    assert set(shown) == set(metrics)
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'<img[^>]+src="([^"]+)"', page))
    assert (tmp_path / "curves.png").is_file() and "No evaluation yet" not in page
    # zoo viz --what all runs on every task's checkpoint, or refuses with a ZooError (never a raw traceback)
    try:
        written = visualize(tmp_path / "best.ckpt", "all", out=tmp_path / "viz")
    except ZooError as e:
        assert str(e)
    else:
        assert written and all(p.is_file() for p in written)
