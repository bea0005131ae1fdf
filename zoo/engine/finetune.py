"""Fine-tuning a pretrained backbone: freezing it (a linear probe) or its first stages, keeping their BatchNorm
statistics, and unfreezing at a given epoch with a reduced learning rate. Built on Lightning's ``BaseFinetuning``
(which checkpoints the parameter groups it adds, so a resumed run gets them back), driven by
``model.backbone.freeze / freeze_stages / freeze_bn / unfreeze_at_epoch / unfreeze_lr_mult``.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from torch.optim import Optimizer

from zoo.backbones import Backbone
from zoo.errors import RecipeError
from zoo.recipe import Recipe

__all__ = ["BackboneFreeze", "frozen_parameters"]


def frozen_parameters(recipe: Recipe, backbone: Backbone) -> list[str]:
    """Names (in ``backbone.named_parameters()``) of the parameters ``recipe`` freezes before training."""
    spec = recipe.model.backbone
    if spec.freeze:
        return [name for name, _ in backbone.named_parameters()]
    if spec.freeze_stages is None:
        return []
    levels = len(backbone.feature_info)
    if spec.freeze_stages > levels:
        raise RecipeError("model.backbone.freeze_stages", f"is {spec.freeze_stages} but backbone {spec.name!r} has "
                                                          f"{levels} feature levels: 1..{levels}")
    return [name for name, stage in backbone.parameter_stages().items() if stage < spec.freeze_stages]


class BackboneFreeze(BaseFinetuning):
    """Freezes the recipe's part of ``model.backbone`` before training (its parameters out of the optimizer; their
    BatchNorm layers in eval mode when ``freeze_bn``), and at ``unfreeze_at_epoch`` makes it trainable again in new
    parameter groups — the optimizer's own grouping (``Optim.param_groups``: layer decay included) at
    ``unfreeze_lr_mult`` times their learning rates — that follow the learning-rate schedule from there on."""

    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        self.recipe = recipe
        self.unfreeze_at = recipe.model.backbone.unfreeze_at_epoch

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        # requires_grad only: BaseFinetuning.freeze would also stop BatchNorm tracking statistics, which
        # freeze_bn=False keeps and freeze_bn=True replaces by eval mode (ZooModel.frozen_bn)
        backbone = pl_module.model.backbone
        params = dict(backbone.named_parameters())
        for name in frozen_parameters(self.recipe, backbone):
            params[name].requires_grad = False
        pl_module.model.frozen_bn = self.recipe.model.backbone.freeze_bn
        pl_module.model.train(pl_module.model.training)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if self.unfreeze_at is None or epoch != self.unfreeze_at:
            return
        backbone = pl_module.model.backbone
        frozen = [p for p in backbone.parameters() if not p.requires_grad]
        for p in frozen:
            p.requires_grad = True
        pl_module.model.train(pl_module.model.training)
        groups = self.recipe.optim.param_groups(frozen, backbone=backbone,
                                                scale=self.recipe.model.backbone.unfreeze_lr_mult)
        for group in groups:
            optimizer.add_param_group(group)
        _follow_schedule(pl_module.trainer, [g["lr"] for g in groups])


def _follow_schedule(trainer: L.Trainer, lrs: list[float]) -> None:
    """Gives parameter groups added during training (with learning rates ``lrs``) to the schedulers, which otherwise
    leave groups beyond their ``base_lrs`` untouched; the extended lists are in their state, so resume keeps them."""
    for config in trainer.lr_scheduler_configs:
        for scheduler in (config.scheduler, *getattr(config.scheduler, "_schedulers", ())):
            if hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs.extend(lrs)
