"""Fine-tuning a pretrained backbone: freezing it (a linear probe), keeping its BatchNorm statistics, and unfreezing it
at a given epoch with a reduced learning rate. Built on Lightning's ``BaseFinetuning`` (its parameter-group handling
and checkpointed state), driven by ``model.backbone.freeze / freeze_bn / unfreeze_at_epoch / unfreeze_lr_mult``.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from torch.optim import Optimizer

from zoo.recipe import Recipe

__all__ = ["BackboneFreeze"]


class BackboneFreeze(BaseFinetuning):
    """Freezes ``model.backbone`` before training (its parameters out of the optimizer; its BatchNorm layers in eval
    mode when ``freeze_bn``), and at ``unfreeze_at_epoch`` makes it trainable again in a new parameter group
    ``backbone`` with ``optim.lr x unfreeze_lr_mult``."""

    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        spec = recipe.model.backbone
        self.freeze_bn, self.unfreeze_at = spec.freeze_bn, spec.unfreeze_at_epoch
        self.lr = recipe.optim.lr * spec.unfreeze_lr_mult
        self.weight_decay = recipe.optim.weight_decay

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        # requires_grad only: BaseFinetuning.freeze would also stop BatchNorm tracking statistics, which
        # freeze_bn=False keeps and freeze_bn=True replaces by eval mode (ZooModel.frozen_bn)
        for p in pl_module.model.backbone.parameters():
            p.requires_grad = False
        pl_module.model.frozen_bn = self.freeze_bn
        pl_module.model.train(pl_module.model.training)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if self.unfreeze_at is not None and epoch == self.unfreeze_at:
            pl_module.model.frozen_bn = False
            pl_module.model.train(pl_module.model.training)
            self.unfreeze_and_add_param_group(pl_module.model.backbone, optimizer, lr=self.lr, initial_denom_lr=1.0,
                                              train_bn=True)
            optimizer.param_groups[-1].update(name="backbone", weight_decay=self.weight_decay)
