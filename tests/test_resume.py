"""Runs that survive interruption: refusing to mix runs, --overwrite, exact --resume after SIGKILL, seeded data order."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_digits_recipe
from zoo.engine import train
from zoo.engine.datamodule import SeededOrder, ZooDataModule
from zoo.engine.run import prepare_data
from zoo.errors import ZooError

EXACT = ["trainer.max_epochs=4", "trainer.deterministic=True", "trainer.limit_train_batches=6",
         "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.accelerator=cpu", "trainer.devices=1"]


def _zoo_train(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "zoo.cli", "train", "recipes/classify_digits_lenet5.py", *EXACT,
                             "--out", str(out), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True, map_location="cpu")["state_dict"]


def test_sigkill_after_an_epoch_then_resume_is_bit_identical_to_the_uninterrupted_run(tmp_path):
    whole = _zoo_train(tmp_path / "whole")
    assert whole.wait(timeout=600) == 0, whole.stderr.read().decode()[-2000:]

    killed = _zoo_train(tmp_path / "killed")
    last, first_write = tmp_path / "killed" / "last.ckpt", None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # kill once last.ckpt is written the second time (after epoch 2)
        if last.is_file():
            mtime = last.stat().st_mtime_ns
            first_write = first_write or mtime
            if mtime != first_write:
                break
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "metrics.json").exists(), "the run ended before it was killed"
    assert torch.load(last, weights_only=True, map_location="cpu")["epoch"] < 3

    resumed = _zoo_train(tmp_path / "killed", "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()[-2000:]
    for run in ("whole", "killed"):  # last.ckpt is the last epoch's, in both runs
        assert torch.load(tmp_path / run / "last.ckpt", weights_only=True, map_location="cpu")["epoch"] == 3
    a, b = _weights(tmp_path / "whole" / "last.ckpt"), _weights(last)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "killed" / "metrics.json").is_file()


def test_a_folder_holding_a_run_is_refused_and_overwrite_starts_clean(trained_checkpoint, tmp_path):
    recipe = tiny_digits_recipe()
    train(recipe, tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ZooError, match=r"already holds a run .*--resume.*--overwrite"):
        train(recipe, tmp_path)
    before = (tmp_path / "logs" / "metrics.csv").read_text()
    train(recipe, tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"  # only what the run wrote is removed
    # the logs of the new run alone: the same number of rows, not the old run's rows and the new one's
    assert len((tmp_path / "logs" / "metrics.csv").read_text().splitlines()) == len(before.splitlines())
    with pytest.raises(ZooError, match="choose one"):
        train(recipe, tmp_path, resume=True, overwrite=True)


def test_resume_takes_the_stored_recipe_and_refuses_changes_but_more_epochs(tmp_path):
    recipe = tiny_digits_recipe()
    with pytest.raises(ZooError, match="no last.ckpt"):
        train(recipe, tmp_path, resume=True)
    train(recipe, tmp_path)
    steps = torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"]
    first_log = (tmp_path / "logs" / "metrics.csv").read_text()
    with pytest.raises(ZooError, match=r"optim.lr: 0.01 -> 0.5.*Start a new run"):
        train(recipe.override(**{"optim.lr": 0.5}), tmp_path, resume=True)
    metrics = train(recipe.override(**{"trainer.max_epochs": 2}), tmp_path, resume=True)
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 2 * steps and "top1" in metrics
    # the first segment's log rows stay; the resumed epochs are logged beside them
    assert (tmp_path / "logs" / "metrics.csv").read_text() == first_log
    assert (tmp_path / "logs" / "resumed_1" / "metrics.csv").is_file()


def test_checkpoints_get_the_permissions_of_the_other_run_files(trained_checkpoint):
    run = trained_checkpoint.parent
    mode = stat.S_IMODE((run / "best.ckpt").stat().st_mode)
    assert mode == stat.S_IMODE((run / "metrics.json").stat().st_mode)


def test_seeded_order_depends_on_seed_and_epoch_only():
    a, b = SeededOrder(50, seed=3, shuffle=True), SeededOrder(50, seed=3, shuffle=True)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert [i for i, _ in a] != [i for i, _ in b] and sorted(i for i, _ in b) == list(range(50))
    assert len({s for _, s in a} | {s for _, s in b}) == 100  # every sample of every epoch its own seed
    plain = SeededOrder(5, seed=3, shuffle=False)
    assert [i for i, _ in plain] == list(range(5))


def test_augmented_batches_do_not_depend_on_worker_processes():
    recipe = tiny_digits_recipe(**{"aug.train": (__import__("albumentations").Affine(rotate=(-30, 30), p=1.0),)})
    splits = prepare_data(recipe)
    batches = []
    for workers in (0, 2):
        loader = ZooDataModule(recipe.override(**{"data.num_workers": workers}), splits).train_dataloader()
        loader.sampler.set_epoch(1)
        batches.append(next(iter(loader)))
    (x0, t0), (x2, t2) = batches
    assert torch.equal(x0, x2) and torch.equal(t0["label"].value, t2["label"].value)


def test_a_run_that_fails_on_its_data_leaves_the_earlier_run_in_place(tmp_path):
    from tests.conftest import tiny_folder_recipe, write_class_folders

    folder = write_class_folders(tmp_path / "classes", {"a": 6, "b": 6}, size=16)
    train(tiny_folder_recipe(folder), tmp_path / "run")
    before = {name: (tmp_path / "run" / name).read_bytes() for name in ("recipe.json", "data.json", "best.ckpt")}
    broken = tiny_folder_recipe(tmp_path / "no_such_folder")
    with pytest.raises(ZooError):
        train(broken, tmp_path / "run", overwrite=True)
    assert {name: (tmp_path / "run" / name).read_bytes() for name in before} == before
