"""The one LightningModule: backbone (→ neck) → named heads → loss terms, with each head's metrics.

Never task-specific: the engine iterates over the recipe's heads, feeds each its own target key of the batch (only
the samples that have it) and prefixes what it logs with the head's name (``train/det/box``, ``val/seg/miou``).
A single ``model.head`` has the name "" and logs unprefixed names (``val/top1``), as before named heads existed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from zoo.data.targets import Labelled
from zoo.errors import RecipeError
from zoo.recipe import Recipe
from zoo.recipe.parts import ModelSpec
from zoo.task import HeadContext, ImageGeometry
from zoo.weights import load_state_dict_report, read_weights_file, strip_prefix

__all__ = ["ZooModel", "ZooModule", "CHECKPOINT_KEY", "CHECKPOINT_FORMAT"]

log = logging.getLogger(__name__)
CHECKPOINT_KEY = "zoo"  # where the recipe and class names sit inside every checkpoint
CHECKPOINT_FORMAT = 2  # 1: one head, classes a list; 2: classes per target key (zoo.engine.checkpoint migrates 1)


def _key(name: str) -> str:
    return name or "main"  # ModuleDict keys cannot be empty


def build_head(spec: Any, feature_info: Sequence[Any], *, path: str, num_classes: int,
               geometry: ImageGeometry) -> nn.Module:
    """``spec.build(...)``, with a build error that is not already a recipe error named by the head's path."""
    try:
        return spec.build(feature_info, num_classes=num_classes, geometry=geometry)
    except RecipeError as e:
        if e.path.startswith("model."):
            raise
        raise RecipeError(path + (f".{e.path}" if e.path else ""), str(e).removeprefix(f"{e.path}: ")) from None


class ZooModel(nn.Module):
    """``backbone`` (→ ``neck``) then every head on the same features.

    A single head is the attribute ``head`` (so its state-dict keys are ``head.*``); named heads live in
    ``heads[name]``. ``forward(images)`` returns the single head's outputs, or ``{name: outputs}`` for named heads.

    Args:
        recipe: the model, data geometry and heads.
        classes: class names per target key (their count sizes each head).
    """

    def __init__(self, recipe: Recipe, classes: Mapping[str, Sequence[str]]) -> None:
        super().__init__()
        self.backbone = recipe.model.backbone.build()
        info = self.backbone.feature_info
        self.neck = None
        if recipe.model.neck is not None:
            self.neck = recipe.model.neck.build_neck(info)
            info = self.neck.feature_info
        geometry = ImageGeometry.of(recipe.data)
        built = {}
        for name, (spec, _) in recipe.heads().items():
            count = spec.num_classes or len(classes.get(type(spec).task.target, ()))
            built[name] = build_head(spec, info, path=ModelSpec.path(name), num_classes=count, geometry=geometry)
        self.single = recipe.model.head is not None
        if self.single:
            self.head = built[""]
        else:
            self.heads = nn.ModuleDict(built)

    frozen_bn = False  # set by zoo.engine.finetune.BackboneFreeze: BatchNorm of frozen parameters stays in eval mode

    def train(self, mode: bool = True) -> ZooModel:
        super().train(mode)
        if mode and self.frozen_bn:  # Lightning calls train() around every validation: keep frozen BN statistics
            for m in self.backbone.modules():
                params = list(m.parameters(recurse=False))
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and params and not any(p.requires_grad
                                                                                         for p in params):
                    m.eval()
        return self

    def named_heads(self) -> dict[str, nn.Module]:
        return {"": self.head} if self.single else dict(self.heads.items())

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = self.backbone(images)
        return self.neck(features) if self.neck is not None else features

    def run_heads(self, images: torch.Tensor, targets: Mapping[str, Labelled] | None = None,
                  keys: Mapping[str, str] | None = None) -> dict[str, tuple[Any, Any]]:
        """``{name: (outputs, target)}`` for every head whose target key some sample of the batch has.

        ``keys`` maps head name → target key. With ``targets=None`` (prediction) every head runs on every image and
        the target is ``None``. Otherwise a head runs on the samples that have its target only.
        """
        features = self.features(images)
        result = {}
        for name, head in self.named_heads().items():
            if targets is None:
                result[name] = (head(features, images, None), None)
                continue
            labelled = targets.get(keys[name])
            if labelled is None:  # no sample of this batch carries this head's target
                continue
            feats, imgs = features, images
            if len(labelled.index) != len(images):
                feats, imgs = [f[labelled.index] for f in features], images[labelled.index]
            result[name] = (head(feats, imgs, labelled.value), labelled.value)
        return result

    def forward(self, images: torch.Tensor) -> Any:
        outputs = {name: out for name, (out, _) in self.run_heads(images).items()}
        return outputs[""] if self.single else outputs


def _gather_lists(metrics: nn.Module) -> None:
    """Joins, in every rank, the per-sample lists a task's metrics keep in Python (the attributes their class names
    in ``gathered``: decoded detections, captions), so ``compute`` sees the whole split in the order one process
    would (rank r evaluates samples r, r + w, r + 2w, ...: ``SeededOrder``), ties between equal scores included;
    the torchmetrics inside them synchronise themselves."""
    import torch.distributed as dist

    world = dist.get_world_size()
    for attr in getattr(metrics, "gathered", ()):
        parts: list = [None] * world
        dist.all_gather_object(parts, getattr(metrics, attr))
        joined = [None] * sum(map(len, parts))
        for rank, part in enumerate(parts):
            joined[rank::world] = part
        setattr(metrics, attr, joined)


class ZooModule(L.LightningModule):
    """Trains and evaluates any (backbone, heads, losses, metrics) combination a recipe describes.

    Args:
        recipe: the run's description.
        classes: class names per target key, from the dataset adapter.
    """

    def __init__(self, recipe: Recipe, classes: Mapping[str, Sequence[str]]) -> None:
        super().__init__()
        self.recipe = recipe
        self.classes = {k: tuple(v) for k, v in classes.items()}
        self.model = ZooModel(recipe, self.classes)
        if recipe.model.weights:
            raw = read_weights_file(recipe.model.weights)
            state = strip_prefix(raw.get("state_dict", raw), "model.")
            load_state_dict_report(self.model, state, what=f"{recipe.model.weights} into the whole model")
        specs = recipe.heads()
        modules = self.model.named_heads()
        self.target_keys = {name: type(spec).task.target for name, (spec, _) in specs.items()}
        self.contexts = {name: HeadContext(name, spec, modules[name], self.classes.get(self.target_keys[name], ()))
                         for name, (spec, _) in specs.items()}
        self.criteria = nn.ModuleDict({_key(n): loss.build(modules[n]) for n, (_, loss) in specs.items()})
        self.val_metrics, self.test_metrics = (
            nn.ModuleDict({_key(n): type(s).task.make_metrics(self.contexts[n]) for n, (s, _) in specs.items()})
            for _ in range(2))
        weighting = getattr(recipe.loss, "weighting", "fixed")
        # Kendall, Gal & Cipolla 2018: total = sum_h exp(-s_h) * L_h + s_h, s_h = log sigma_h^2 learned per head
        self.log_vars = nn.Parameter(torch.zeros(len(specs))) if weighting == "uncertainty" else None
        self.monitor, self.monitor_mode = recipe.monitor()
        self.last_metrics: dict[str, float] = {}

    @property
    def task(self):
        """The task of a single-head model (``None`` for named heads)."""
        return type(self.recipe.model.head).task if self.model.single else None

    def forward(self, images: torch.Tensor) -> Any:
        return self.model(images)

    def _losses(self, batch: Any) -> tuple[dict[str, tuple[Any, Any]], torch.Tensor, dict[str, torch.Tensor]]:
        """Head outputs with their targets, the weighted total loss, and every named term (prefixed, unweighted)."""
        images, targets = batch
        ran = self.model.run_heads(images, targets, self.target_keys)
        total = images.new_zeros(())
        terms: dict[str, torch.Tensor] = {}
        for i, name in enumerate(self.contexts):
            if name not in ran:
                continue
            outputs, target = ran[name]
            head_terms = self.criteria[_key(name)](outputs, target)
            head_loss = sum(head_terms.values())
            p = ModelSpec.prefix(name)
            terms.update({f"{p}{k}": v for k, v in head_terms.items()})
            if name:
                terms[f"{name}/loss"] = head_loss
            if self.log_vars is not None:
                total = total + torch.exp(-self.log_vars[i]) * head_loss + self.log_vars[i]
            else:
                total = total + (self.recipe.loss.weight(name) if name else 1.0) * head_loss
        return ran, total, terms

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        per_epoch = max(1, self.trainer.num_training_batches)
        done = (self.current_epoch + batch_idx / per_epoch) / max(1, self.trainer.max_epochs)
        for criterion in self.criteria.values():
            if hasattr(criterion, "set_progress"):  # loss warm-ups (a VAE's KL weight)
                criterion.set_progress(min(1.0, done))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        mix = getattr(self.criteria[_key("")], "mix", None) if self.model.single else None
        images, targets = batch
        labelled = targets.get(self.target_keys[""]) if mix is not None else None
        if labelled is not None and len(labelled.index) == len(images):  # mixup / CutMix: a fully labelled batch
            mixed, value = mix(images, labelled.value)
            batch = (mixed, {**targets, self.target_keys[""]: Labelled(value, labelled.index)})
        _, loss, terms = self._losses(batch)
        # Logging costs ~0.5 ms a call (docs/benchmarks.md); log only the steps the loggers will keep.
        trainer = self._trainer
        if trainer is None or (self.global_step + 1) % trainer.log_every_n_steps == 0 or trainer.is_last_batch:
            n = len(batch[0])
            self.log("train/loss", loss.detach(), prog_bar=True, batch_size=n)
            if len(terms) > 1:
                self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, batch_size=n)
            if self.log_vars is not None:
                self.log_dict({f"train/weight/{name}": torch.exp(-v.detach())
                               for name, v in zip(self.contexts, self.log_vars)}, batch_size=n)
        return loss

    def _eval_step(self, batch: Any, split: str, metrics: nn.ModuleDict) -> None:
        ran, loss, terms = self._losses(batch)
        n = len(batch[0])
        self.log(f"{split}/loss", loss, prog_bar=split == "val", batch_size=n, sync_dist=True)
        for name, (outputs, target) in ran.items():
            if name:
                self.log(f"{split}/{name}/loss", terms[f"{name}/loss"], batch_size=len(target), sync_dist=True)
            metrics[_key(name)].update(outputs, target)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_metrics)

    def _eval_epoch_end(self, split: str, metrics: nn.ModuleDict) -> None:
        values: dict[str, float] = {}
        for name in self.contexts:
            m = metrics[_key(name)]
            if self.trainer.world_size > 1:
                _gather_lists(m)
            values.update({f"{ModelSpec.prefix(name)}{k}": v for k, v in m.compute().items()})
            m.reset()
        self.last_metrics = values
        for k, v in values.items():
            self.log(f"{split}/{k}", v, prog_bar=k == self.monitor, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test", self.test_metrics)

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images)

    def _steps_per_epoch(self) -> int:
        """The optimizer steps of a training epoch (1 outside a fit: a schedule counted in epochs, then)."""
        trainer = self._trainer
        if trainer is None or getattr(trainer, "datamodule", None) is None:
            return 1
        return trainer.datamodule.steps_per_epoch()

    def configure_optimizers(self) -> Any:
        optimizer = self.recipe.optim.build(self, backbone=self.model.backbone)  # the model, learned loss weights
        epochs = self.recipe.trainer.max_epochs
        schedule = self.recipe.sched.build(optimizer, epochs=epochs,
                                           steps_per_epoch=self._steps_per_epoch(),
                                           monitor=f"val/{self.monitor}", mode=self.monitor_mode)
        return optimizer if schedule is None else {"optimizer": optimizer, "lr_scheduler": schedule}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Plain data only: the checkpoint must load with weights_only=True and rebuild the module alone.
        checkpoint[CHECKPOINT_KEY] = {"recipe": self.recipe.to_data(),
                                      "classes": {k: list(v) for k, v in self.classes.items()},
                                      "format": CHECKPOINT_FORMAT}
        checkpoint.pop("hyper_parameters", None)
