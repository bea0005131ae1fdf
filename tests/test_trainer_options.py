"""Trainer options around the training step: gradient accumulation, channels-last, torch.compile, the loggers and
mid-epoch checkpoints that a resumed run continues from."""

from __future__ import annotations

import importlib.util
import shutil

import lightning as L
import pytest
import torch

from tests.conftest import tiny_digits_recipe
from zoo.engine import train
from zoo.errors import RecipeError


class _Seen(L.Callback):
    def __init__(self) -> None:
        self.layouts: list[tuple[bool, bool]] = []  # (first conv weight, input batch) channels-last, per step
        self.compiled = False

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        conv = next(m for m in module.model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
        images = batch[0]
        self.layouts.append((conv.weight.is_contiguous(memory_format=torch.channels_last),
                             images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()))
        self.compiled = module.model._compiled_call_impl is not None


def _fit(recipe, out, *extra_callbacks):
    import zoo.engine.run as run

    original = run._trainer

    def with_extra(r, o, callbacks, **kwargs):
        return original(r, o, [*callbacks, *extra_callbacks], **kwargs)

    run._trainer = with_extra
    try:
        return train(recipe, out)
    finally:
        run._trainer = original


def test_accumulation_channels_last_and_compile_reach_the_training_step(tmp_path):
    seen = _Seen()
    recipe = tiny_digits_recipe(**{"trainer.accumulate_grad_batches": 2, "trainer.channels_last": True,
                                   "trainer.compile": True, "data.channels": 3, "model.backbone.in_chans": 3})
    _fit(recipe, tmp_path, seen)
    assert seen.layouts and all(w and x for w, x in seen.layouts)
    assert seen.compiled
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 2  # 4 batches, one optimizer step per 2
    eager = tiny_digits_recipe(**{"data.channels": 3, "model.backbone.in_chans": 3})
    train(eager, tmp_path / "eager")
    assert saved["state_dict"].keys() == torch.load(tmp_path / "eager" / "last.ckpt",
                                                    weights_only=True)["state_dict"].keys()  # no _orig_mod. keys


def test_loggers_are_chosen_by_the_recipe(tmp_path):
    train(tiny_digits_recipe(**{"trainer.loggers": ("csv",)}), tmp_path / "csv")
    assert (tmp_path / "csv" / "logs" / "metrics.csv").is_file()
    assert not list((tmp_path / "csv" / "logs").glob("events.out.tfevents*"))
    with pytest.raises(RecipeError, match="trainer.loggers: names a logger twice"):
        tiny_digits_recipe(**{"trainer.loggers": ("csv", "csv")})
    with pytest.raises(RecipeError, match="trainer.loggers"):
        tiny_digits_recipe(**{"trainer.loggers": ("wandb",)})


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed (the dev extra has it)")
def test_mlflow_logs_to_a_local_file_store_in_the_run_folder(tmp_path):
    train(tiny_digits_recipe(**{"trainer.loggers": ("mlflow",)}), tmp_path)
    runs = [p for p in (tmp_path / "mlruns").glob("*/*") if (p / "metrics").is_dir()]
    assert len(runs) == 1
    logged = {str(p.relative_to(runs[0] / "metrics")) for p in (runs[0] / "metrics").rglob("*") if p.is_file()}
    assert {"train/loss", "val/top1", "lr/head"} <= logged
    assert not (tmp_path / "logs").exists()  # only the loggers named


def _crash_after(step: int) -> L.Callback:
    class Crash(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            if trainer.global_step == step:  # the checkpoint of step `step` is on disk
                raise RuntimeError("simulated crash")

    return Crash()


def test_a_run_resumed_from_a_mid_epoch_checkpoint_ends_bit_identical(tmp_path):
    options = {"trainer.max_epochs": 2, "trainer.limit_train_batches": 6, "trainer.deterministic": True,
               "trainer.checkpoint_every_n_steps": 2, "data.batch_size": 16,
               "aug.train": (__import__("albumentations").Affine(rotate=(-20, 20), p=0.5),)}
    recipe = tiny_digits_recipe(**options)
    train(recipe, tmp_path / "whole")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(recipe, tmp_path / "crashed", _crash_after(8))  # step 8: two steps into the second epoch
    mid = torch.load(tmp_path / "crashed" / "last.ckpt", weights_only=True)
    assert mid["global_step"] == 8 and mid["epoch"] == 1
    shutil.copy(tmp_path / "crashed" / "last.ckpt", tmp_path / "mid.ckpt")
    train(recipe, tmp_path / "crashed", resume=True)
    a = torch.load(tmp_path / "whole" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "crashed" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 12
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
