"""The one LightningModule: backbone → head → loss terms, with the task's metrics. Never task-specific."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from zoo.recipe import Recipe
from zoo.weights import load_state_dict_report, read_weights_file, strip_prefix

__all__ = ["ZooModule", "CHECKPOINT_KEY"]

log = logging.getLogger(__name__)
CHECKPOINT_KEY = "zoo"  # where the recipe and class names sit inside every checkpoint


class ZooModel(nn.Module):
    """``backbone`` then ``head``: ``forward(images [N, C, H, W]) -> head outputs``."""

    def __init__(self, recipe: Recipe, num_classes: int) -> None:
        super().__init__()
        self.backbone = recipe.model.backbone.build()
        head = recipe.model.head
        if hasattr(head, "with_data"):  # image decoders take the data's size, channels and normalisation
            head = head.with_data(recipe.data)
        self.head = head.build(self.backbone.feature_info, num_classes=head.num_classes or num_classes)

    def forward(self, images: torch.Tensor, targets: Any = None) -> Any:
        features = self.backbone(images)
        if getattr(self.head, "takes_targets", False):  # teacher-forced heads (captioning)
            return self.head(features, targets)
        if getattr(self.head, "takes_images", False):  # autoencoders measure reconstructions against the input
            return self.head(features, images)
        return self.head(features)


class ZooModule(L.LightningModule):
    """Trains and evaluates any (backbone, head, loss, metrics) combination a recipe describes.

    Args:
        recipe: the run's description.
        classes: class names, from the dataset adapter (their count sizes the head).
    """

    def __init__(self, recipe: Recipe, classes: Sequence[str]) -> None:
        super().__init__()
        self.recipe, self.classes = recipe, list(classes)
        self.task = recipe.task
        self.model = ZooModel(recipe, len(self.classes))
        if recipe.model.weights:
            raw = read_weights_file(recipe.model.weights)
            state = strip_prefix(raw.get("state_dict", raw), "model.")
            load_state_dict_report(self.model, state, what=f"{recipe.model.weights} into the whole model")
        self.criterion = recipe.loss.build()
        self.val_metrics = self.task.make_metrics(self.classes)
        self.test_metrics = self.task.make_metrics(self.classes)
        self.last_metrics: dict[str, float] = {}

    def forward(self, images: torch.Tensor, targets: Any = None) -> Any:
        return self.model(images, targets)

    def _losses(self, batch: Any) -> tuple[Any, Any, dict[str, torch.Tensor]]:
        images, targets = batch
        outputs = self(images, targets)
        terms = self.criterion(outputs, targets)
        return outputs, targets, terms

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if hasattr(self.criterion, "set_progress"):  # loss warm-ups (a VAE's KL weight)
            per_epoch = max(1, self.trainer.num_training_batches)
            done = self.current_epoch + batch_idx / per_epoch
            self.criterion.set_progress(min(1.0, done / max(1, self.trainer.max_epochs)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        _, _, terms = self._losses(batch)
        loss = sum(terms.values())
        # Logging costs ~0.5 ms a call (docs/benchmarks.md); log only the steps the loggers will keep.
        trainer = self._trainer
        if trainer is None or (self.global_step + 1) % trainer.log_every_n_steps == 0 or trainer.is_last_batch:
            n = len(batch[0])
            self.log("train/loss", loss.detach(), prog_bar=True, batch_size=n)
            if len(terms) > 1:
                self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, batch_size=n)
        return loss

    def _eval_step(self, batch: Any, split: str, metrics: nn.Module) -> None:
        outputs, targets, terms = self._losses(batch)
        self.log(f"{split}/loss", sum(terms.values()), prog_bar=split == "val", batch_size=len(batch[0]),
                 sync_dist=True)
        metrics.update(outputs, targets)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_metrics)

    def _eval_epoch_end(self, split: str, metrics: nn.Module) -> None:
        values = metrics.compute()
        metrics.reset()
        self.last_metrics = values
        for k, v in values.items():
            self.log(f"{split}/{k}", v, prog_bar=k == self.task.monitor, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test", self.test_metrics)

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images)

    def configure_optimizers(self) -> Any:
        optimizer = self.recipe.optim.build(self.model)
        schedule = self.recipe.sched.build(optimizer, epochs=self.recipe.trainer.max_epochs,
                                           monitor=f"val/{self.task.monitor}", mode=self.task.mode)
        return optimizer if schedule is None else {"optimizer": optimizer, "lr_scheduler": schedule}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Plain data only: the checkpoint must load with weights_only=True and rebuild the module alone.
        checkpoint[CHECKPOINT_KEY] = {"recipe": self.recipe.to_data(), "classes": self.classes, "format": 1}
        checkpoint.pop("hyper_parameters", None)
