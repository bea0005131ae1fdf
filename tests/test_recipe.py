"""The recipe DSL: typed specs, dotted overrides, validation before any data is read, plain-data round trip."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import albumentations as A
import pytest

from heads import Classifier, CrossEntropy
from tests.conftest import tiny_digits_recipe
from zoo.data import DigitsData, ImageFolderData
from zoo.errors import RecipeError, ZooError
from zoo.recipe import Augment, BackboneSpec, Optim, Recipe, load_recipe, parse_override
from zoo.recipe.spec import SPECS, spec


@pytest.mark.parametrize("text, expected", [
    ("optim.lr=0.01", ("optim.lr", 0.01)),
    ("trainer.max_epochs=3", ("trainer.max_epochs", 3)),
    ("model.backbone.name=resnet18", ("model.backbone.name", "resnet18")),
    ("model.head.hidden=[64, 32]", ("model.head.hidden", (64, 32))),
    ("trainer.gradient_clip_val=None", ("trainer.gradient_clip_val", None)),
    ("data.root=/data/my folder", ("data.root", "/data/my folder")),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_overrides_apply_with_types():
    r = tiny_digits_recipe().override("optim.lr=1", "data.batch_size=64", "model.head.dropout=0.5",
                                      "model.backbone.name=resnet18", "trainer.max_epochs=3")
    assert r.optim.lr == 1.0 and isinstance(r.optim.lr, float)  # ints widen to float fields
    assert (r.data.batch_size, r.model.head.dropout, r.trainer.max_epochs) == (64, 0.5, 3)
    assert r.model.backbone.name == "resnet18"
    assert tiny_digits_recipe().optim.lr != 1.0  # the original is untouched (immutable)


def test_string_field_takes_numeric_looking_text(tmp_path):
    r = Recipe(data=ImageFolderData(), model=BackboneSpec() | Classifier(), loss=CrossEntropy())
    assert r.override("data.root=2024").data.root == "2024"
    assert r.override("model.backbone.pretrained=True").model.backbone.pretrained is True
    assert r.override(f"model.backbone.pretrained={tmp_path}/w.pth").model.backbone.pretrained == f"{tmp_path}/w.pth"


@pytest.mark.parametrize("override, path, words", [
    ("optim.lrr=0.1", "optim.lrr", ["unknown field", "did you mean lr"]),
    ("optimizer.lr=0.1", "optimizer", ["unknown field", "optim"]),
    ("optim.lr=-1", "optim.lr", ["must be > 0", "-1"]),
    ("optim.lr=1e999", "optim.lr", ["must be a finite number", "inf"]),
    ("data.mean=(-1e999,)", "data.mean", ["must be a finite number", "-inf"]),
    ("optim.name=sgdd", "optim.name", ["'sgd'", "'adam'", "sgdd"]),
    ("data.batch_size=0", "data.batch_size", [">= 1", "0"]),
    ("data.batch_size=abc", "data.batch_size", ["expected int", "abc"]),
    ("model.backbone.name=resnet_18", "model.backbone.name", ["unknown backbone", "resnet18"]),
    ("model.head.num_classes=5", "model.head.num_classes", ["is 5", "10 classes"]),
    ("model.backbone.in_chans=3", "model.backbone.in_chans", ["data.channels is 1"]),
    ("trainer.max_epochs=2.5", "trainer.max_epochs", ["expected int", "2.5"]),
    ("optim.lr.x=1", "optim.lr", ["has no field 'x'"]),
    ("noequals", "", ["dotted.path=value"]),
])
def test_bad_overrides_name_path_and_value(override, path, words):
    with pytest.raises(RecipeError) as info:
        tiny_digits_recipe().override(override)
    message = str(info.value)
    assert message.startswith(path), message
    for word in words:
        assert word in message, message


def test_nan_is_refused_in_a_spec_field():
    with pytest.raises(RecipeError, match=r"^\w+\.lr: must be a finite number, got nan"):
        dataclasses.replace(tiny_digits_recipe().optim, lr=float("nan"))


def test_loss_must_match_head_task():
    @spec
    class NotAClassificationLoss:  # a loss of no task
        def build(self):
            return None

    try:
        with pytest.raises(RecipeError, match="loss: NotAClassificationLoss"):
            Recipe(data=DigitsData(), model=BackboneSpec(in_chans=1) | Classifier(), loss=NotAClassificationLoss())
    finally:
        SPECS._entries.pop("NotAClassificationLoss")


def test_duplicate_spec_name_raises():
    with pytest.raises(ZooError, match="registered twice"):
        @spec
        class Optim:  # noqa: F811  (same name as zoo.recipe.Optim)
            lr: float = 0.1


def test_specs_validate_at_construction():
    with pytest.raises(RecipeError, match="Optim.momentum: must be < 1"):
        Optim(momentum=1.5)
    with pytest.raises(RecipeError, match="aug.train\\[0\\]"):
        Augment(train=("flip",))
    with pytest.raises(RecipeError, match="data.mean"):
        DigitsData(mean=(0.5, 0.5))


def test_round_trip_through_json_with_albumentations():
    r = tiny_digits_recipe().override(aug=Augment(train=(A.HorizontalFlip(p=0.3), A.Affine(rotate=(-5, 5)))))
    saved = json.loads(json.dumps(r.to_data()))
    back = Recipe.from_data(saved)
    assert json.loads(json.dumps(back.to_data())) == saved  # 0 == 0.0: albumentations may widen ints
    assert back.optim == r.optim and back.model == r.model and back.data == r.data
    assert isinstance(back.aug.train[0], A.HorizontalFlip) and back.aug.train[0].p == 0.3


def test_from_data_refuses_unregistered_types():
    data = tiny_digits_recipe().to_data()
    data["loss"]["_spec"] = "os.system"
    with pytest.raises(ZooError, match="unknown spec 'os.system'"):
        Recipe.from_data(data)


def test_listing_shows_every_overridable_path():
    listing = tiny_digits_recipe().listing()
    for key in ("trainer.max_epochs", "data.batch_size", "optim.lr", "model.backbone.name",
                "model.backbone.pretrained"):
        assert f"\n{key} " in listing or listing.startswith(key)


def test_load_recipe_files_and_errors(tmp_path):
    r = load_recipe("recipes/classify_digits_lenet5.py", ["trainer.max_epochs=2"])
    assert r.trainer.max_epochs == 2 and r.model.backbone.name == "lenet5"
    leaf = tmp_path / "recipes" / "leaf.py"
    leaf.parent.mkdir()
    leaf.write_text("from recipes.classify_digits_lenet5 import recipe as base\n"
                    "recipe = base.override('optim.lr=0.5', name='leaf')\n")
    # a leaf recipe outside the repo can't import the repo's recipes package unless it is importable
    import sys
    sys.path.insert(0, ".")
    try:
        leaf_recipe = load_recipe(leaf)
    finally:
        sys.path.remove(".")
    assert leaf_recipe.optim.lr == 0.5 and leaf_recipe.name == "leaf"
    with pytest.raises(ZooError, match="does not exist"):
        load_recipe(tmp_path / "missing.py")
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ZooError, match="no module-level `recipe"):
        load_recipe(empty)


def test_folder_recipe_fails_before_reading_without_root(tmp_path):
    r = load_recipe("recipes/classify_folder.py")
    with pytest.raises(RecipeError, match="data.root: is not set"):
        r.data.preflight()
    with pytest.raises(RecipeError, match="does not exist"):
        r.override(f"data.root={tmp_path}/nope").data.preflight()


def test_zoo_check_lists_every_field_of_every_shipped_recipe_with_its_comment():
    from zoo.recipe import load_recipe

    for path in sorted(p for p in Path("recipes").glob("*.py") if p.name != "__init__.py"):
        recipe = load_recipe(path)
        lines = recipe.listing(comments=True).splitlines()
        assert len(lines) == len(recipe.listing().splitlines())
        # the names of named heads are dict keys, not fields: they have no comment of their own
        bare = [line for line in lines if "  # " not in line and not re.match(r"(model|loss)\.heads\.\w+ +:", line)]
        assert not bare, f"{path}: fields without a comment: {bare}"
    listing = load_recipe("recipes/finetune_shapes_classifier.py").listing(comments=True)
    assert any(line.startswith("model.backbone.freeze ") and "# fine-tuning: train the heads only" in line
               for line in listing.splitlines())


@pytest.mark.parametrize("override, message", [
    ({"trainer.accelerator": "tpu"}, "trainer.accelerator: must be one of"),
    ({"trainer.strategy": "bogus"}, "trainer.strategy: 'bogus' is not a Lightning strategy"),
    ({"trainer.strategy": "dpp"}, "did you mean 'ddp'"),
    ({"trainer.precision": 17}, "trainer.precision: must be one of"),
    ({"trainer.devices": -5}, "trainer.devices: is -5"),
    ({"trainer.devices": "zero"}, "trainer.devices: is 'zero'"),
    ({"trainer.devices": (0, -1)}, "device ids are >= 0"),
    ({"optim.betas": (2.0, -1.0)}, "optim.betas: must be < 1, got 2.0"),
    ({"data.image_size": 100000}, "data.image_size: must be <= 8192"),
])
def test_trainer_and_optimizer_settings_are_validated_in_the_spec(override, message):
    from tests.conftest import tiny_digits_recipe
    from zoo.errors import RecipeError

    with pytest.raises(RecipeError, match=re.escape(message)):
        tiny_digits_recipe(**override)


def test_an_accelerator_this_machine_lacks_fails_before_data_is_read(tmp_path):
    import torch

    from tests.conftest import tiny_digits_recipe
    from zoo.engine import train
    from zoo.errors import RecipeError

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(RecipeError, match="trainer.accelerator: is 'gpu' but this machine has no CUDA GPU"):
        train(tiny_digits_recipe(**{"trainer.accelerator": "gpu"}), tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("text, message", [
    ("x = 1\nraise ValueError('boom')\n", r"r.py:2: ValueError: boom"),
    ("x = (\n", r"r.py:1: '\(' was never closed"),
    ("root:x:0:0:root:/root:/bin/bash\n", r"r.py:1: invalid syntax"),
])
def test_a_recipe_file_that_fails_is_reported_by_file_and_line(tmp_path, text, message):
    from zoo.cli import main
    from zoo.errors import ZooError
    from zoo.recipe import load_recipe

    path = tmp_path / "r.py"
    path.write_text(text)
    with pytest.raises(ZooError, match=message):
        load_recipe(path)
    plain = tmp_path / "passwd"  # no .py suffix: still read as Python, not "no loader"
    plain.write_text(text)
    with pytest.raises(ZooError, match="passwd:"):
        load_recipe(plain)
    assert main(["check", str(path)]) == 2
