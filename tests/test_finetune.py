"""Fine-tuning controls: a frozen backbone (linear probe) with frozen BatchNorm statistics, unfreezing at an epoch,
a backbone learning-rate multiplier with named parameter groups, and an exponential moving average of the weights."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch

from tests.conftest import tiny_folder_recipe, write_class_folders
from zoo.engine import train
from zoo.errors import RecipeError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_class_folders(tmp_path_factory.mktemp("classes"), {"a": 8, "b": 8}, size=16)


class _Record(L.Callback):
    """The module's weights (parameters and buffers) at the start of training and after every training step."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.groups: list[list[tuple[str, float]]] = []

    def on_train_start(self, trainer, module) -> None:
        self.states.append(copy.deepcopy(module.model.state_dict()))

    def on_train_batch_end(self, trainer, module, *args) -> None:
        self.states.append(copy.deepcopy(module.model.state_dict()))
        self.groups.append([(g.get("name", "?"), g["lr"]) for g in trainer.optimizers[0].param_groups])


def _fit(recipe, tmp_path, record: _Record) -> None:
    import zoo.engine.run as run

    original = run._trainer

    def with_record(r, out, callbacks, **kwargs):
        return original(r, out, [*callbacks, record], **kwargs)

    run._trainer = with_record
    try:
        train(recipe, tmp_path)
    finally:
        run._trainer = original


def _changed(before: dict, after: dict, prefix: str) -> set[str]:
    return {k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])}


def test_a_frozen_backbone_keeps_its_weights_and_batchnorm_statistics(folder, tmp_path):
    record = _Record()
    _fit(tiny_folder_recipe(folder, **{"model.backbone.freeze": True, "trainer.limit_train_batches": 3}),
         tmp_path, record)
    first, last = record.states[0], record.states[-1]
    assert not _changed(first, last, "backbone.")  # weights and running statistics alike
    assert _changed(first, last, "head.")
    assert {name for name, _ in record.groups[0]} == {"head", "head_no_decay"}  # no backbone group to update


def test_freeze_bn_false_lets_the_statistics_follow_the_data(folder, tmp_path):
    record = _Record()
    _fit(tiny_folder_recipe(folder, **{"model.backbone.freeze": True, "model.backbone.freeze_bn": False,
                                       "trainer.limit_train_batches": 3}), tmp_path, record)
    changed = _changed(record.states[0], record.states[-1], "backbone.")
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)


def test_the_backbone_unfreezes_at_its_epoch_with_a_reduced_learning_rate(folder, tmp_path):
    record = _Record()
    recipe = tiny_folder_recipe(folder, **{"model.backbone.freeze": True, "model.backbone.unfreeze_at_epoch": 1,
                                           "model.backbone.unfreeze_lr_mult": 0.1, "trainer.max_epochs": 2,
                                           "trainer.limit_train_batches": 2, "sched.name": "none", "optim.lr": 0.02})
    _fit(recipe, tmp_path, record)
    assert not _changed(record.states[0], record.states[2], "backbone.")  # epoch 0: frozen
    assert _changed(record.states[2], record.states[4], "backbone.")  # epoch 1: trained
    assert ("backbone", pytest.approx(0.002)) in record.groups[-1] and ("head", pytest.approx(0.02)) in record.groups[-1]
    with pytest.raises(RecipeError, match="unfreeze_at_epoch.*freeze is False"):
        tiny_folder_recipe(folder, **{"model.backbone.unfreeze_at_epoch": 1})


def test_backbone_lr_multiplier_and_readable_group_names_in_the_logs(folder, tmp_path):
    record = _Record()
    _fit(tiny_folder_recipe(folder, **{"optim.backbone_lr_mult": 0.1, "optim.lr": 0.01, "sched.name": "step"}),
         tmp_path, record)
    groups = dict(record.groups[0])
    assert groups["backbone"] == pytest.approx(0.001) and groups["backbone_no_decay"] == pytest.approx(0.001)
    assert groups["head"] == pytest.approx(0.01)
    header = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"lr/backbone", "lr/head"} <= set(header)


def test_ema_weights_equal_the_hand_computed_average_after_three_steps(folder, tmp_path):
    decay = 0.6
    record = _Record()
    _fit(tiny_folder_recipe(folder, **{"trainer.ema_decay": decay, "trainer.limit_train_batches": 3, "data.batch_size": 2,
                                       "data.val_fraction": 0.25}), tmp_path, record)
    steps = record.states[1:]  # the weights after steps 1, 2, 3
    assert len(steps) == 3
    expected = {}
    for k in steps[0]:
        if not steps[0][k].is_floating_point():
            continue
        ema = steps[0][k].clone()  # the first update copies the weights
        for state in steps[1:]:
            ema = decay * ema + (1 - decay) * state[k]
        expected[k] = ema
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    for k, value in expected.items():
        torch.testing.assert_close(saved[f"model.{k}"], value, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(saved[f"model.{k}"], steps[-1][k]) for k in expected)  # not the last step's weights


def test_mixup_and_cutmix_give_soft_targets_that_sum_to_one_and_train(folder, tmp_path):
    from timm.loss import SoftTargetCrossEntropy

    from heads import Classifier, CrossEntropy

    head = Classifier().build([__import__("zoo.backbones.base", fromlist=["FeatureInfo"]).FeatureInfo(8, 4, "x")],
                              num_classes=3)
    for mixup, cutmix in ((0.4, 0.0), (0.0, 1.0)):
        loss = CrossEntropy(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=0.1).build(head)
        images, labels = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 1])
        original = images.clone()  # timm mixes in place
        mixed, soft = loss.mix(images, labels)
        assert soft.shape == (4, 3) and torch.allclose(soft.sum(1), torch.ones(4)) and (soft < 1).all()
        assert not torch.equal(mixed, original)
        logits = torch.randn(4, 3)
        assert torch.allclose(loss(logits, soft)["ce"], SoftTargetCrossEntropy()(logits, soft))
    odd = CrossEntropy(mixup_alpha=0.4).build(head)
    assert odd.mix(torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 2]))[1].dtype == torch.int64  # odd: unmixed
    metrics = train(tiny_folder_recipe(folder, **{"loss.cutmix_alpha": 1.0, "loss.mixup_alpha": 0.2}), tmp_path)
    assert "top1" in metrics


def test_named_heads_refuse_a_batch_mixing_loss():
    from heads import Classifier, CrossEntropy
    from zoo.data import DigitsData
    from zoo.recipe import BackboneSpec, Losses, Recipe

    with pytest.raises(RecipeError, match="loss.heads.a: mixes training batches"):
        Recipe(data=DigitsData(), model=BackboneSpec(name="lenet5", in_chans=1) | {"a": Classifier(), "b": Classifier()},
               loss=Losses(heads={"a": CrossEntropy(mixup_alpha=0.2), "b": CrossEntropy()}))


def test_the_shipped_finetune_recipe_starts_from_a_detectors_backbone(tmp_path, caplog):
    from zoo.recipe import load_recipe

    tiny = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1", "trainer.accelerator=cpu", "trainer.devices=1", "data.num_images=40",
            "data.batch_size=4", "data.num_workers=0"]
    train(load_recipe("recipes/detect_shapes_yolo.py", tiny), tmp_path / "detector")
    weights = tmp_path / "detector" / "best.ckpt"
    detector = torch.load(weights, weights_only=True)["state_dict"]
    recipe = load_recipe("recipes/finetune_shapes_classifier.py",
                         [*tiny, f"model.weights={weights}", "trainer.max_epochs=4", "trainer.limit_train_batches=2",
                          "data.batch_size=8"])
    with caplog.at_level("INFO"):
        train(recipe, tmp_path / "finetuned")
    assert "into the whole model" in caplog.text and "transferred" in caplog.text
    tuned = torch.load(tmp_path / "finetuned" / "last.ckpt", weights_only=True)["current_model_state"]
    backbone = [k for k in detector if k.startswith("model.backbone.") and detector[k].is_floating_point()
                and k.endswith("weight")]
    # frozen for 3 epochs, then trained: the backbone started from the detector's weights and moved from there
    assert backbone and any(not torch.equal(detector[k], tuned[k]) for k in backbone)
