"""``zoo tune``: the learning-rate range test on a recipe, and the batch-size finder's refusal without a GPU."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import tiny_digits_recipe
from zoo.cli import main
from zoo.engine.tune import find_lr


def test_the_lr_finder_sweeps_suggests_and_leaves_the_model_untouched(tmp_path):
    recipe = tiny_digits_recipe(**{"trainer.limit_train_batches": 1.0})
    result = find_lr(recipe, tmp_path, min_lr=1e-5, max_lr=1.0, steps=30)
    lrs = result["lr"]
    assert len(lrs) >= 12 and all(a < b for a, b in zip(lrs, lrs[1:]))  # an exponential sweep
    assert lrs[0] == pytest.approx(1e-5, rel=0.5) and lrs[-1] <= 1.0
    assert result["suggestion"] is not None and lrs[0] <= result["suggestion"] <= lrs[-1]
    # the first point is the first batch's own loss (about ln 10 for an untrained 10-way classifier), not half of it
    assert result["loss"][0] == pytest.approx(2.3, abs=0.25)
    assert (tmp_path / "lr_find.png").stat().st_size > 5000
    assert json.loads((tmp_path / "lr_find.json").read_text())["suggestion"] == result["suggestion"]
    assert not list(tmp_path.glob("*.ckpt")) and not list(tmp_path.glob(".lr_find*"))  # its checkpoint is removed


def test_zoo_tune_lr_prints_the_suggestion_and_batch_refuses_on_a_cpu(tmp_path, capsys):
    args = ["recipes/classify_digits_lenet5.py", "trainer.accelerator=cpu", "trainer.devices=1",
            "--out", str(tmp_path)]
    assert main(["tune", "lr", *args, "--steps", "15"]) == 0
    assert "suggested optim.lr=" in capsys.readouterr().out
    if not torch.cuda.is_available():
        assert main(["tune", "batch", *args]) == 2
        assert "GPU memory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tune", "speed", *args])
