"""Named heads over typed targets: the head contract (generated over every head spec and a sample of backbones),
joint training, partial labels, loss weighting, the monitored metric, overrides into named heads, and checkpoints
of the previous (single-head) format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import heads
from zoo.data.captions import BOS, EOS, CaptionBatch
from zoo.data.targets import Labelled, collate_samples
from zoo.engine import evaluate, load_module, predict, train
from zoo.engine.checkpoint import migrate_checkpoint
from zoo.engine.module import ZooModel, ZooModule
from zoo.engine.run import check_model
from zoo.errors import CheckpointError, RecipeError
from zoo.recipe import BackboneSpec, Losses, Recipe, Trainer, load_recipe
from zoo.recipe.spec import SPECS
from zoo.task import Geometry, HeadContext, ImageGeometry

FIXTURES = Path(__file__).parent / "fixtures"
RECIPES = sorted(p for p in Path("recipes").glob("*.py") if p.name != "__init__.py")
SIZE = 64


def _head_loss_pairs() -> dict[str, tuple]:
    """Every (head spec, loss spec) pair the shipped recipes use, by head spec class name."""
    pairs = {}
    for path in RECIPES:
        for head, loss in load_recipe(path).heads().values():
            pairs.setdefault(type(head).__name__, (head, loss))
    return pairs


PAIRS = _head_loss_pairs()
HEAD_SPECS = sorted(name for name, cls in ((n, SPECS.get(n)) for n in SPECS)
                    if hasattr(cls, "task") and hasattr(cls, "num_classes") and cls.__module__.startswith("heads"))
BACKBONES = ["resnet10t", "resnet20", "mobilenetv3_small_100"]


def test_every_head_spec_is_used_by_a_shipped_recipe():
    # The generated contract tests below take their (head, loss) pairs from the recipes: a new head needs one.
    assert set(HEAD_SPECS) <= set(PAIRS), f"heads without a shipped recipe: {set(HEAD_SPECS) - set(PAIRS)}"


def _targets(kind: str, n: int, classes: tuple[str, ...]) -> object:
    """A collated batch of ``kind`` targets for ``n`` images of side SIZE."""
    g = torch.Generator().manual_seed(0)
    if kind == "label":
        return torch.randint(0, len(classes), (n,), generator=g)
    if kind == "mask":
        return torch.randint(0, len(classes), (n, SIZE, SIZE), generator=g)
    if kind == "image":
        return torch.rand(n, 3, SIZE, SIZE, generator=g)
    if kind == "boxes":
        return [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 28.0], [33.0, 30.0, 60.0, 62.0]]),
                 "labels": torch.tensor([0, len(classes) - 1]), "image_id": i, "orig_size": (SIZE, SIZE),
                 "size": (SIZE, SIZE)} for i in range(n)]
    if kind == "caption":
        tokens = torch.tensor([[BOS, 4, 5, 6, EOS]] * n)
        return CaptionBatch(tokens, [[[classes[4], classes[5], classes[6]]]] * n)
    raise AssertionError(kind)


def _classes(kind: str) -> tuple[str, ...]:
    if kind == "caption":
        return ("<pad>", "<bos>", "<eos>", "<unk>", "a", "red", "circle", "square")
    return () if kind == "image" else ("bg", "one", "two")


def _is_tensors(outputs) -> bool:
    if isinstance(outputs, torch.Tensor):
        return True
    return isinstance(outputs, dict) and all(isinstance(v, torch.Tensor) for v in outputs.values())


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("head_name", sorted(PAIRS))
def test_head_contract(head_name, backbone):
    head_spec, loss_spec = PAIRS[head_name]
    task = type(head_spec).task
    classes = _classes(task.target)
    net = BackboneSpec(name=backbone).build()
    module = head_spec.build(net.feature_info, num_classes=head_spec.num_classes or len(classes),
                             geometry=ImageGeometry(size=SIZE, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3))
    images = torch.randn(2, 3, SIZE, SIZE)
    target = _targets(task.target, 2, classes)
    features = net(images)
    module.train()
    train_out = module(features, images, target)
    assert _is_tensors(train_out), f"{head_name}.forward returned {type(train_out)}"
    terms = loss_spec.build(module)(train_out, target)
    assert terms and all(isinstance(k, str) and torch.isfinite(v) and v.dim() == 0 for k, v in terms.items())
    sum(terms.values()).backward()
    module.eval()
    with torch.no_grad():
        out = module(features, images, None)  # prediction: no target
        assert _is_tensors(out)
        if isinstance(out, dict):  # what a forward returns does not depend on training mode (beyond noise)
            assert set(out) <= set(train_out)
        ctx = HeadContext("", head_spec, module, classes)
        predictions = task.predict(out, ctx, Geometry(input_size=(SIZE, SIZE)))
        assert len(predictions) == 2 and all(isinstance(p, dict) and p for p in predictions)
        json.dumps(predictions)  # the prediction format is JSON
        metrics = task.make_metrics(ctx)
        metrics.update(module(features, images, target), target)
        values = metrics.compute()
    assert set(task.metrics) <= set(values), f"{head_name} declares {task.metrics}, computes {sorted(values)}"
    if task.per_class:
        assert any(k.startswith(f"{task.per_class}/") for k in values)


# ---- joint training -----------------------------------------------------------------------------------------------

def _tiny(path: str, *extra: str) -> Recipe:
    return load_recipe(path, ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                              "trainer.limit_test_batches=1", "trainer.accelerator=cpu", "trainer.devices=1",
                              "data.batch_size=4", "data.num_workers=0", *extra])


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("joint")
    train(_tiny("recipes/multitask_shapes.py", "data.num_images=40", "model.heads.cap.max_length=5",
                "trainer.log_every_n_steps=1"), out)
    return out


def test_joint_recipe_trains_and_reports_prefixed_metrics(joint_run):
    metrics = json.loads((joint_run / "metrics.json").read_text())
    for name in ("det/map", "det/map50", "det/ap/circle", "seg/miou", "seg/pixel_acc", "cap/bleu4", "cap/cider"):
        assert name in metrics
    logged = (joint_run / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    for name in ("train/loss", "train/det/box", "train/det/cls", "train/seg/dice", "train/cap/ce", "val/det/map50",
                 "val/seg/miou", "val/cap/cider", "val/seg/loss"):
        assert name in logged, name
    data = json.loads((joint_run / "data.json").read_text())
    assert set(data["classes"]) == {"boxes", "mask", "caption"}


def test_joint_predict_returns_every_head_and_draws_one_picture(joint_run, tmp_path):
    from zoo.data.shapes import ShapesConfig, shapes_root

    image = shapes_root(ShapesConfig(num_images=40, max_objects=3)) / "images" / "00001.png"
    (result,) = predict(joint_run / "best.ckpt", [image], out=tmp_path,
                        overrides={"model.heads.det.score_threshold": 0.0, "model.heads.det.max_detections": 2})
    assert set(result) == {"image", "det", "seg", "cap"}
    assert len(result["det"]["detections"]) == 2 and "caption" in result["cap"] and "rle" in result["seg"]
    assert len(list((tmp_path / "images").glob("*.png"))) == 1
    assert (tmp_path / "det" / "detections.json").is_file() and (tmp_path / "seg" / "masks").is_dir()


def test_joint_eval_reports_every_head(joint_run):
    metrics = evaluate(joint_run / "best.ckpt", split="val",
                       overrides={"data.num_workers": 0, "trainer.limit_test_batches": 1})
    assert {"det/map50", "seg/miou", "cap/cider"} <= set(metrics)


# ---- partial labels -----------------------------------------------------------------------------------------------

def _partial_recipe() -> Recipe:
    from heads import SegmentationLoss, UNet, Yolo, YoloLoss
    from zoo.data import MultiData, ShapesDetectionData, ShapesSegmentationData

    data = MultiData(parts=(ShapesDetectionData(num_images=20, max_objects=3),
                            ShapesSegmentationData(num_images=20, shapes_seed=1)), image_size=32, batch_size=8,
                     num_workers=0)
    return Recipe(data=data, model=BackboneSpec(name="resnet10t") | {"det": Yolo(), "seg": UNet(width=16)},
                  loss=Losses(heads={"det": YoloLoss(), "seg": SegmentationLoss(name="ce+dice")}),
                  trainer=Trainer(accelerator="cpu", devices=1, monitor="seg/miou"))


def test_partial_labels_mask_each_head_to_its_samples_and_both_learn():
    recipe = _partial_recipe()
    splits = recipe.data.setup()
    assert set(splits.classes) == {"boxes", "mask"}
    from zoo.engine.datamodule import ZooDataModule

    loader = ZooDataModule(recipe, splits).split_loader("train")  # unshuffled: boxes-only samples, then masks-only
    dataset = loader.dataset
    batch = collate_samples([dataset[i] for i in (0, 1, 2, len(dataset) - 3, len(dataset) - 2, len(dataset) - 1)])
    images, targets = batch
    assert targets["boxes"].index.tolist() == [0, 1, 2] and targets["mask"].index.tolist() == [3, 4, 5]

    torch.manual_seed(0)
    module = ZooModule(recipe, splits.classes)
    seen = {}
    for name, head in module.model.named_heads().items():
        head.register_forward_pre_hook(lambda m, args, name=name: seen.setdefault(name, []).append(args))
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    history = {"det/loss": [], "seg/loss": []}
    for _ in range(30):
        _, total, terms = module._losses(batch)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        for k in history:
            history[k].append(float(terms[k]))
    # each head ran on its own three samples only, with their targets, never on the others
    for name, key in (("det", "boxes"), ("seg", "mask")):
        for features, head_images, target in seen[name]:
            assert torch.equal(head_images, images[targets[key].index])
            assert len(features[0]) == 3 and target is targets[key].value
    for k, values in history.items():
        assert min(values[-5:]) < 0.7 * values[0], f"{k} did not decrease: {values[0]:.3f} -> {values[-5:]}"


def test_a_batch_without_any_sample_of_a_target_skips_that_head():
    recipe = _partial_recipe()
    module = ZooModule(recipe, {"boxes": ("circle", "square", "triangle"),
                                "mask": ("background", "circle", "square", "triangle")})
    images = torch.randn(2, 3, 32, 32)
    targets = {"mask": Labelled(torch.zeros(2, 32, 32, dtype=torch.long), torch.arange(2))}
    ran, total, terms = module._losses((images, targets))
    assert set(ran) == {"seg"} and not any(k.startswith("det/") for k in terms)
    assert torch.isfinite(total)


# ---- loss weights ---------------------------------------------------------------------------------------------------

def test_fixed_weights_and_learned_uncertainty_weighting():
    recipe = _partial_recipe()
    classes = {"boxes": ("circle", "square", "triangle"), "mask": ("background", "circle", "square", "triangle")}
    images = torch.randn(2, 3, 32, 32)
    targets = {"mask": Labelled(torch.zeros(2, 32, 32, dtype=torch.long), torch.arange(2)),
               "boxes": Labelled(_targets("boxes", 2, ("a", "b", "c")), torch.arange(2))}
    torch.manual_seed(0)
    plain = ZooModule(recipe, classes).eval()
    _, total, terms = plain._losses((images, targets))
    assert torch.allclose(total, terms["det/loss"] + terms["seg/loss"])

    weighted = ZooModule(recipe.override(**{"loss.weights": {"det": 2.0, "seg": 0.5}}), classes).eval()
    weighted.load_state_dict(plain.state_dict())
    _, total, terms = weighted._losses((images, targets))
    assert torch.allclose(total, 2.0 * terms["det/loss"] + 0.5 * terms["seg/loss"])

    learned = ZooModule(recipe.override(**{"loss.weighting": "uncertainty"}), classes).eval()
    learned.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        learned.log_vars.copy_(torch.tensor([0.5, -1.0]))
    _, total, terms = learned._losses((images, targets))
    expected = (torch.exp(torch.tensor(-0.5)) * terms["det/loss"] + 0.5
                + torch.exp(torch.tensor(1.0)) * terms["seg/loss"] - 1.0)
    assert torch.allclose(total, expected)
    optimizer = learned.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    assert any(p is learned.log_vars for g in optimizer.param_groups for p in g["params"])


def test_losses_must_name_the_heads():
    from heads import SegmentationLoss

    recipe = _partial_recipe()
    with pytest.raises(RecipeError, match=r"loss.heads: names \['seg'\] but model.heads names \['det', 'seg'\]"):
        recipe.override(**{"loss": Losses(heads={"seg": SegmentationLoss()})})
    with pytest.raises(RecipeError, match="loss.weights"):
        recipe.override(**{"loss.weights": {"dett": 1.0}})


# ---- the monitored metric and validation before data --------------------------------------------------------------

def test_monitor_is_a_recipe_field_checked_against_the_heads_metric_names():
    recipe = _partial_recipe()
    assert recipe.monitor() == ("seg/miou", "max")
    assert recipe.override(**{"trainer.monitor": "val/det/map50"}).monitor() == ("det/map50", "max")
    assert recipe.override(**{"trainer.monitor": "det/ap/circle"}).monitor() == ("det/ap/circle", "max")
    assert recipe.override(**{"trainer.monitor": "loss"}).monitor() == ("loss", "min")
    with pytest.raises(RecipeError, match=r"trainer.monitor: 'det/nope' is no metric.*det/map50.*seg/miou"):
        recipe.override(**{"trainer.monitor": "det/nope"})
    single = load_recipe("recipes/classify_digits_lenet5.py")
    assert single.monitor() == ("top1", "max")
    with pytest.raises(RecipeError, match="trainer.monitor"):
        load_recipe("recipes/classify_digits_lenet5.py", ["trainer.monitor=miou"])


@pytest.mark.parametrize("path, override, where", [
    ("recipes/detect_shapes_yolov1.py", "model.head.level=-9", "model.head.level"),
    ("recipes/caption_shapes_transformer.py", "model.head.level=7", "model.head.level"),
    ("recipes/multitask_shapes.py", "model.heads.cap.level=-9", "model.heads.cap.level"),
])
def test_check_builds_the_model_and_names_the_bad_level(path, override, where):
    recipe = load_recipe(path, [override])  # the spec alone cannot know the backbone's levels
    with pytest.raises(RecipeError, match=rf"^{where}: .* out of range"):
        check_model(recipe)


def test_check_catches_a_head_that_cannot_take_the_backbone_maps(tmp_path):
    from zoo.cli import main

    # LeNet-5's valid convolutions need 32 px: at 16 px its last convolution has no input left
    assert main(["check", "recipes/classify_digits_lenet5.py", "data.image_size=16"]) == 2
    with pytest.raises(RecipeError, match=r"^model: a dummy batch \[2, 1, 16, 16\] does not run through backbone "
                                          r"'lenet5'"):
        check_model(load_recipe("recipes/classify_digits_lenet5.py", ["data.image_size=16"]))


def test_overrides_reach_into_named_heads_and_list_them():
    recipe = load_recipe("recipes/multitask_shapes.py", ["model.heads.det.score_threshold=0.4",
                                                          "loss.heads.seg.dice_weight=2.0"])
    assert recipe.model.heads["det"].score_threshold == 0.4 and recipe.loss.heads["seg"].dice_weight == 2.0
    assert "model.heads.det.score_threshold = 0.4" in recipe.listing().replace("  ", " ").replace("  ", " ")
    with pytest.raises(RecipeError, match=r"model.heads.dett: unknown key; did you mean det"):
        load_recipe("recipes/multitask_shapes.py", ["model.heads.dett.score_threshold=0.4"])
    with pytest.raises(RecipeError, match="model.heads.det.score_threshold"):
        load_recipe("recipes/multitask_shapes.py", ["model.heads.det.score_threshold=2"])
    # named heads survive the checkpoint round trip
    assert Recipe.from_data(recipe.to_data()).to_data() == recipe.to_data()
    assert Recipe.from_data(recipe.to_data()).model == recipe.model


def test_head_names_must_be_identifiers():
    from heads import Classifier

    with pytest.raises(RecipeError, match="model.heads: head name 'a/b'"):
        BackboneSpec() | {"a/b": Classifier()}


def test_neck_feeds_every_head(tmp_path):
    from heads.yolo import PanNeckSpec

    recipe = _partial_recipe()
    model = recipe.model
    necked = Recipe(data=recipe.data, model=BackboneSpec(name="resnet10t") | PanNeckSpec() | dict(model.heads),
                    loss=recipe.loss, trainer=recipe.trainer)
    built = ZooModel(necked, {"boxes": ("a", "b", "c"), "mask": ("bg", "a", "b", "c")}).eval()
    features = built.features(torch.randn(2, 3, 32, 32))
    assert [f.shape[1] for f in features] == [i.channels for i in built.neck.feature_info]
    outputs = built(torch.randn(2, 3, 32, 32))
    assert outputs["seg"].shape[-2:] == (32, 32) and outputs["det"]["boxes"].shape[-1] == 4


# ---- checkpoints of the previous format ---------------------------------------------------------------------------

def test_a_format_1_checkpoint_written_by_the_previous_main_loads_and_evaluates():
    checkpoint = FIXTURES / "format1_classify_digits_lenet5.ckpt"
    module = load_module(checkpoint)
    assert module.classes == {"label": tuple(str(d) for d in range(10))}
    metrics = evaluate(checkpoint, overrides={"data.num_workers": 0})
    # the same metric names as the previous main wrote for this run (metrics.json of that run)
    assert set(metrics) == set(json.loads((FIXTURES / "format1_classify_digits_lenet5.metrics.json").read_text()))


def test_a_format_1_yolo_v1_checkpoint_migrates_its_renamed_field_and_keeps_its_weights():
    saved = json.loads((FIXTURES / "format1_detect_shapes_yolov1.json").read_text())
    zoo_entry = migrate_checkpoint(saved["zoo"], "fixture")
    recipe = Recipe.from_data(zoo_entry["recipe"])
    assert recipe.model.head.level == -3 and zoo_entry["classes"] == {"boxes": ["circle", "square", "triangle"]}
    module = ZooModule(recipe, zoo_entry["classes"])
    assert {k: list(v.shape) for k, v in module.state_dict().items()} == saved["state_dict_shapes"]


def test_a_newer_checkpoint_format_is_refused_with_what_to_do():
    with pytest.raises(CheckpointError, match="format 99 is newer.*upgrade"):
        migrate_checkpoint({"format": 99, "recipe": {}, "classes": {}}, "new.ckpt")


def test_spec_classes_are_saved_by_a_stable_name():
    from zoo.recipe.spec import spec

    @spec(name="TestRenamedHeadOptions")
    class RenamedLater:
        x: int = 1

    assert RenamedLater.spec_name == "TestRenamedHeadOptions" and SPECS.get("TestRenamedHeadOptions") is RenamedLater
    from zoo.recipe.tree import from_data, to_data

    assert to_data(RenamedLater(x=2))["_spec"] == "TestRenamedHeadOptions"
    assert from_data(to_data(RenamedLater(x=2))) == RenamedLater(x=2)
    assert heads.Classifier.spec_name == "Classifier"


def test_a_single_head_recipe_reports_the_metric_names_the_previous_main_reported(tmp_path):
    # metrics.json of a detect_shapes_yolov1 run by the previous main (tests/fixtures), against a run by this one
    before = json.loads((FIXTURES / "format1_detect_shapes_yolov1.metrics.json").read_text())
    now = train(_tiny("recipes/detect_shapes_yolov1.py", "data.num_images=40"), tmp_path)
    assert set(now) == set(before)
