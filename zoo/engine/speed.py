"""Training-speed options that change how the model runs, not what it computes: ``trainer.channels_last`` (NHWC
memory layout of the weights; the input batches follow in ``ZooDataModule``) and ``trainer.compile``
(``torch.compile`` of backbone and heads, in place, so checkpoint keys stay those of the eager model)."""

from __future__ import annotations

import lightning as L
import torch

from zoo.recipe import Recipe

__all__ = ["ModelSpeed"]


class ModelSpeed(L.Callback):
    def __init__(self, recipe: Recipe) -> None:
        self.channels_last, self.compile = recipe.trainer.channels_last, recipe.trainer.compile

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.channels_last:
            pl_module.model.to(memory_format=torch.channels_last)
        if self.compile:
            pl_module.model.compile()  # nn.Module.compile: the module keeps its parameters and state-dict names
