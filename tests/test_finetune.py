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
        self.optimized: set[str] = set()  # model parameter names in the optimizer at the first step

    def on_train_start(self, trainer, module) -> None:
        self.states.append(copy.deepcopy(module.model.state_dict()))

    def on_train_batch_end(self, trainer, module, *args) -> None:
        self.states.append(copy.deepcopy(module.model.state_dict()))
        self.groups.append([(g.get("name", "?"), g["lr"]) for g in trainer.optimizers[0].param_groups])
        if len(self.groups) == 1:
            ids = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
            self.optimized = {name for name, p in module.model.named_parameters() if id(p) in ids}


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


def test_freezing_the_first_stages_keeps_them_and_their_statistics_and_trains_the_rest(folder, tmp_path):
    from zoo.backbones import create_backbone

    stages = create_backbone("resnet10t").parameter_stages()
    record = _Record()
    _fit(tiny_folder_recipe(folder, **{"model.backbone.freeze_stages": 2, "trainer.limit_train_batches": 3}),
         tmp_path, record)
    first, last = record.states[0], record.states[-1]
    frozen_modules = {name.rpartition(".")[0] for name, stage in stages.items() if stage < 2}
    changed = _changed(first, last, "backbone.")
    assert changed, "the later stages train"
    for key in changed:  # nothing inside a frozen stage moved: weights nor BatchNorm running statistics
        assert key.removeprefix("backbone.").rpartition(".")[0] not in frozen_modules, key
    assert any(f"backbone.{name}" in changed for name, stage in stages.items() if stage >= 2)
    assert {"backbone", "head"} <= {name for name, _ in record.groups[0]}
    frozen = {f"backbone.{name}" for name, stage in stages.items() if stage < 2}
    assert frozen and not frozen & record.optimized  # frozen parameters are not in the optimizer at all
    assert {f"backbone.{name}" for name in stages} - frozen <= record.optimized
    from zoo.engine.run import check_model

    with pytest.raises(RecipeError, match=r"model.backbone.freeze_stages: is 9 .* has 5 feature levels: 1..5"):
        check_model(tiny_folder_recipe(folder, **{"model.backbone.freeze_stages": 9}))
    with pytest.raises(RecipeError, match="freeze_stages.*freeze=True"):
        tiny_folder_recipe(folder, **{"model.backbone.freeze_stages": 1, "model.backbone.freeze": True})


@pytest.mark.parametrize("backbone", ["resnet10t", "lenet5", "torchvision/resnet18"])
def test_layer_decay_groups_learn_at_a_geometric_series(backbone):
    from zoo.backbones import create_backbone
    from zoo.recipe import Optim

    body = create_backbone(backbone, in_chans=3)
    head = torch.nn.Linear(body.out_channels, 2)
    model = torch.nn.ModuleDict({"backbone": body, "head": head})
    optim = Optim(lr=0.1, backbone_lr_mult=0.5, layer_decay=0.7)
    ids, layers = body.layer_ids()
    groups = optim.param_groups(model.parameters(), backbone=body)
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] == pytest.approx(0.1)
    seen = set()
    for g in groups:
        if g["name"].startswith("backbone."):
            layer = int(g["name"].removeprefix("backbone.").removesuffix("_no_decay"))
            assert g["lr"] == pytest.approx(0.1 * 0.5 * 0.7 ** (layers - 1 - layer))
            seen.add(layer)
    assert seen == set(ids.values()) and len(seen) >= 3  # every layer has its group
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len(list(model.parameters())) == len({id(p) for p in params})  # each parameter once
    if backbone == "resnet10t":  # timm's own grouping (group_matcher), not the 5 feature levels
        assert layers == 6


def test_warm_up_ramps_per_step_and_the_epoch_interval_stays_available(folder, tmp_path):
    base = {"sched.name": "cosine", "sched.warmup_epochs": 1, "optim.lr": 0.01, "trainer.max_epochs": 2,
            "trainer.limit_train_batches": 4, "data.batch_size": 2}
    record = _Record()
    _fit(tiny_folder_recipe(folder, **base), tmp_path / "step", record)
    head = [dict(g)["head"] for g in record.groups]
    # (recorded after each step's scheduler update) a ramp from lr/100 over the first epoch's 4 steps
    assert head[:4] == pytest.approx([0.01 * (0.01 + 0.99 * k / 4) for k in (1, 2, 3, 4)])
    assert head[-1] < head[4]  # then the cosine decays per step
    record = _Record()
    _fit(tiny_folder_recipe(folder, **base, **{"sched.interval": "epoch"}), tmp_path / "epoch", record)
    head = [dict(g)["head"] for g in record.groups]
    # a staircase, on purpose: one lr per epoch (Lightning steps it within the epoch's last batch, before the record)
    assert len(set(head[:3])) == 1 and len(set(head[4:7])) == 1 and head[0] != head[4], head
    with pytest.raises(RecipeError, match="warmup_epochs: is 0.5"):
        tiny_folder_recipe(folder, **{"sched.interval": "epoch", "sched.warmup_epochs": 0.5})


def test_unfrozen_stages_get_layer_decayed_groups_that_follow_the_schedule(folder, tmp_path):
    record = _Record()
    recipe = tiny_folder_recipe(folder, **{"model.backbone.freeze_stages": 3, "model.backbone.unfreeze_at_epoch": 1,
                                           "model.backbone.unfreeze_lr_mult": 0.5, "optim.layer_decay": 0.5,
                                           "optim.lr": 0.02, "trainer.max_epochs": 3, "trainer.limit_train_batches": 2,
                                           "sched.name": "cosine"})
    _fit(recipe, tmp_path, record)
    names_epoch0 = [name for name, _ in record.groups[0]]
    names_epoch1 = [name for name, _ in record.groups[2]]
    added = names_epoch1[len(names_epoch0):]
    assert added and all(n.startswith("backbone.") for n in added)
    assert not set(added) & set(names_epoch0) or len(names_epoch1) > len(names_epoch0)
    lr_added_e1 = [lr for _, lr in record.groups[2][len(names_epoch0):]]
    lr_added_e2 = [lr for _, lr in record.groups[-1][len(names_epoch0):]]
    assert all(b < a for a, b in zip(lr_added_e1, lr_added_e2))  # the cosine schedule decays them too
