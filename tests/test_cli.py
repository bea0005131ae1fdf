"""The ``zoo`` command line: every verb's --help, and the verbs end to end on tiny runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.cli import build_parser, main

VERBS = sorted(build_parser()._subparsers._group_actions[0].choices)  # generated from the parser itself


def test_verbs_are_the_documented_ones():
    assert {"backbones", "check", "eval", "predict", "summary", "train"} <= set(VERBS)


@pytest.mark.parametrize("verb", VERBS)
def test_help(verb, capsys):
    with pytest.raises(SystemExit) as info:
        main([verb, "--help"])
    assert info.value.code == 0
    shown = capsys.readouterr().out
    assert "usage: zoo " + verb in shown
    assert "`" not in shown  # plain text, not reStructuredText markup


def test_console_script_runs():
    zoo = Path(sys.executable).parent / "zoo"
    result = subprocess.run([str(zoo), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "train" in result.stdout


def test_backbones_lists_sources_and_features(capsys):
    assert main(["backbones", "lenet5*", "--features"]) == 0
    out = capsys.readouterr().out
    assert "lenet5" in out and "zoo" in out and "channels=6,16,120" in out and "strides=2,4,4" in out
    assert main(["backbones", "resnet18", "--source", "torchvision"]) == 0
    assert "torchvision/resnet18" in capsys.readouterr().out


def test_check_prints_resolved_recipe_and_errors(capsys):
    assert main(["check", "recipes/classify_digits_lenet5.py", "optim.lr=0.1"]) == 0
    out = capsys.readouterr().out
    assert "optim.lr" in out and "0.1" in out
    assert main(["check", "recipes/classify_digits_lenet5.py", "optim.lrr=0.1"]) == 2
    err = capsys.readouterr().err
    assert "optim.lrr" in err and "did you mean lr" in err
    assert main(["check", "recipes/classify_folder.py"]) == 2
    assert "data.root" in capsys.readouterr().err


def test_train_eval_predict(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "recipes/classify_digits_lenet5.py", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                 "trainer.limit_val_batches=2", "trainer.accelerator=cpu", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "top1" in printed and str(out) in printed
    epoch_line = next(line for line in printed.splitlines() if line.startswith("epoch 1/1"))
    assert "val/top1=" in epoch_line and "train/loss=" in epoch_line  # this epoch's numbers, not the previous one's
    assert {"best.ckpt", "last.ckpt", "metrics.json"} <= {p.name for p in out.iterdir()}

    assert main(["eval", str(out / "best.ckpt"), "--split", "val", "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics) >= {"top1", "top5"} and all(isinstance(v, float) for v in metrics.values())

    from PIL import Image

    Image.new("L", (8, 8), 128).save(tmp_path / "x.png")
    assert main(["predict", str(out / "best.ckpt"), str(tmp_path / "x.png"), "--out", str(tmp_path / "pred"),
                 "model.head.top_k=2"]) == 0
    preds = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert preds[0]["image"].endswith("x.png") and len(preds[0]["top_k"]) == 2
    assert main(["predict", str(out / "best.ckpt"), str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_overrides_after_options_and_version(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("zoo ")
    out = tmp_path / "run"
    assert main(["train", "recipes/classify_digits_lenet5.py", "--out", str(out), "trainer.max_epochs=1",
                 "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                 "trainer.accelerator=cpu", "optim.lr=0.02"]) == 0
    assert json.loads((out / "recipe.json").read_text())["optim"]["lr"] == 0.02  # taken, not dropped
    with pytest.raises(SystemExit):
        main(["train", "recipes/classify_digits_lenet5.py", "--out", str(out), "--bogus"])


def test_top_level_help_is_plain_text(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "`" not in capsys.readouterr().out


def test_eval_writes_the_pictures_to_out(trained_checkpoint, tmp_path, capsys):
    assert main(["eval", str(trained_checkpoint), "--out", str(tmp_path / "pics"), "trainer.limit_test_batches=1"]) == 0
    assert (tmp_path / "pics" / "confusion_matrix.png").is_file()
    assert list((tmp_path / "pics").glob("predictions_*.png"))
    assert main(["eval", str(trained_checkpoint), str(trained_checkpoint), "--out", str(tmp_path / "x")]) == 2
    assert "--out" in capsys.readouterr().err


def test_an_out_path_that_cannot_be_a_folder_is_one_line_not_a_traceback(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out in (a_file, a_file / "below"):
        assert main(["train", "recipes/classify_digits_lenet5.py", "trainer.max_epochs=1",
                     "trainer.limit_train_batches=1", "trainer.accelerator=cpu", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"error: {out}: " in err and "Traceback" not in err


def test_a_full_disk_while_saving_a_checkpoint_says_so(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    import torch

    from zoo.engine.checkpoint import atomic_torch_save
    from zoo.errors import ZooError

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: namedtuple("u", "total used free")(10, 10, 0))
    with pytest.raises(ZooError, match=r"could not write checkpoint .*best.ckpt: no space left on device"):
        atomic_torch_save({}, tmp_path / "best.ckpt")
    assert not list(tmp_path.iterdir())  # no partial file left
