"""The engine: a training run's outputs, safe and atomic checkpoints, eval and predict from a checkpoint alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_digits_recipe
from zoo.engine import atomic_torch_save, evaluate, load_module, predict, read_checkpoint, train
from zoo.errors import CheckpointError


def test_run_folder_contents(trained_checkpoint):
    run = trained_checkpoint.parent
    for name in ("best.ckpt", "last.ckpt", "metrics.json", "recipe.json", "recipe.txt", "data.json",
                 "confusion_matrix.png"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
    assert (run / "logs" / "metrics.csv").is_file()
    assert list((run / "logs").glob("events.out.tfevents.*")), "TensorBoard log missing"
    assert json.loads((run / "data.json").read_text())["sizes"] == {"train": 1257, "val": 180, "test": 360}


def test_checkpoint_is_plain_data_with_recipe(trained_checkpoint):
    data = torch.load(trained_checkpoint, weights_only=True)  # no pickled objects at all
    assert data["zoo"]["classes"] == {"label": [str(d) for d in range(10)]}
    assert data["zoo"]["format"] == 2  # classes per target key
    assert data["zoo"]["recipe"]["model"]["backbone"]["name"] == "lenet5"
    assert "hyper_parameters" not in data


def test_eval_and_predict_need_only_the_checkpoint(trained_checkpoint, tmp_path, capsys):
    lone = tmp_path / "lone.ckpt"
    shutil.copy(trained_checkpoint, lone)  # no run folder, no recipe file next to it
    metrics = evaluate(lone, split="test")
    expected = json.loads((trained_checkpoint.parent / "metrics.json").read_text())
    assert metrics["top1"] == pytest.approx(expected["top1"], abs=1e-6)
    assert evaluate(lone, split="val")["top1"] >= 0

    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((digits.images[i] * 255 / 16).astype("uint8")).save(folder / f"{i}.png")
    results = predict(lone, [folder], out=tmp_path / "pred", overrides={"model.head.top_k": 3})
    assert [Path(r["image"]).name for r in results] == ["0.png", "1.png", "2.png"]
    for r in results:
        probs = [c["prob"] for c in r["top_k"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
        assert r["top_k"][0]["class"] in [str(d) for d in range(10)]
    drawn = sorted((tmp_path / "pred" / "images").iterdir())
    assert [p.name for p in drawn] == ["00000_0.png", "00001_1.png", "00002_2.png"]
    assert Image.open(drawn[0]).size[0] >= 96  # 8x8 digits are enlarged so the label fits
    assert json.loads((tmp_path / "pred" / "predictions.json").read_text()) == results


def test_evaluation_with_an_out_folder_draws_a_prediction_grid(trained_checkpoint, tmp_path):
    from PIL import Image

    evaluate(trained_checkpoint, split="val", out=tmp_path)
    grid = Image.open(tmp_path / "predictions_val.png")
    assert grid.mode == "RGB" and grid.size[0] > 4 * 96 and grid.size[1] > 4 * 96
    assert (tmp_path / "confusion_matrix.png").is_file()


def test_predictions_match_the_model(trained_checkpoint, tmp_path):
    module = load_module(trained_checkpoint)
    assert not module.training
    assert module.recipe.model.backbone.pretrained is False


class _Boom:
    def __reduce__(self):
        return (Path.touch, (Path(_Boom.marker),))


def test_pickled_checkpoint_is_refused_and_nothing_runs(tmp_path):
    _Boom.marker = str(tmp_path / "pwned")
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "zoo": {}, "payload": _Boom()}, evil)
    with pytest.raises(CheckpointError, match="refused") as info:
        read_checkpoint(evil)
    assert str(evil) in str(info.value)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(CheckpointError, match="refused"):
        load_module(evil)
    assert not (tmp_path / "pwned").exists()


def test_not_a_zoo_checkpoint(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not a zoo checkpoint"):
        read_checkpoint(plain)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.ckpt")


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "best.ckpt"
    atomic_torch_save({"v": torch.tensor(1)}, path)

    def crash(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"v": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["v"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["best.ckpt"]  # no temp file left behind


def test_trainer_uses_atomic_io(trained_checkpoint, monkeypatch, tmp_path):
    calls = []
    import zoo.engine.checkpoint as ckpt

    real = ckpt.atomic_torch_save
    monkeypatch.setattr(ckpt, "atomic_torch_save", lambda obj, path: (calls.append(Path(path).name), real(obj, path)))
    train(tiny_digits_recipe(**{"trainer.limit_train_batches": 1.0 * 2, "data.test_fraction": 0.2}), tmp_path)
    assert {"best.ckpt", "last.ckpt"} <= set(calls)


def test_fine_tune_from_checkpoint_reinitialises_other_classifier(trained_checkpoint, tmp_path, caplog):
    from zoo.engine.module import ZooModule

    recipe = tiny_digits_recipe(**{"model.weights": str(trained_checkpoint)})
    with caplog.at_level("INFO", logger="zoo.weights"):
        module = ZooModule(recipe, classes={"label": ["a", "b", "c"]})  # 3 classes, the checkpoint has 10
    assert "1 re-initialised" in caplog.text or "2 re-initialised" in caplog.text, caplog.text
    assert "head.mlp.5.weight" in caplog.text  # the 10-class output layer, now 3 classes
    original = load_module(trained_checkpoint)
    assert torch.equal(module.model.backbone.body.c1[0].weight, original.model.backbone.body.c1[0].weight)
    assert module.model.head.mlp[-1].out_features == 3


def test_seeded_runs_repeat(tmp_path):
    recipe = tiny_digits_recipe(**{"trainer.deterministic": True})
    a = train(recipe, tmp_path / "a")
    b = train(recipe, tmp_path / "b")
    assert a == b


@pytest.mark.parametrize("value, lightning", [("1", 1), ("1.0", 1.0), ("0.25", 0.25), ("3", 3), ("3.0", 3)])
def test_batch_limits_follow_lightning_int_count_float_fraction(value, lightning):
    from zoo.engine.run import _trainer
    from zoo.recipe import load_recipe

    recipe = load_recipe("recipes/classify_digits_lenet5.py", [f"trainer.limit_{s}_batches={value}"
                                                               for s in ("train", "val", "test")])
    trainer = _trainer(recipe, None, [], enable_progress_bar=False)
    got = (trainer.limit_train_batches, trainer.limit_val_batches, trainer.limit_test_batches)
    assert got == (lightning,) * 3 and all(type(g) is type(lightning) for g in got)


def test_limit_test_batches_bounds_evaluation(trained_checkpoint, monkeypatch):
    from zoo.engine import ZooModule

    calls = []
    original = ZooModule.test_step
    monkeypatch.setattr(ZooModule, "test_step", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    evaluate(trained_checkpoint)
    full = len(calls)
    calls.clear()
    evaluate(trained_checkpoint, overrides={"trainer.limit_test_batches": 2})
    assert full > 2 and len(calls) == 2


def test_train_loss_is_logged_when_an_epoch_is_shorter_than_the_logging_interval(tmp_path):
    from tests.conftest import tiny_digits_recipe
    from zoo.engine import train

    train(tiny_digits_recipe(**{"trainer.limit_train_batches": 3, "trainer.log_every_n_steps": 50}), tmp_path)
    rows = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("train/loss")
    assert any(row.split(",")[column] for row in rows[1:])
