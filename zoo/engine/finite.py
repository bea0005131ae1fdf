"""Stops a run whose training loss stops being a finite number, before that step touches the weights."""

from __future__ import annotations

import lightning as L
import torch

from zoo.errors import ZooError

__all__ = ["FiniteLoss", "NonFiniteLossError"]


class NonFiniteLossError(ZooError):
    """The training loss became inf or nan; the message names the epoch and step."""


class FiniteLoss(L.Callback):
    """Raises :class:`NonFiniteLossError` when a training step's loss is inf or nan.

    Checked before the backward pass, so the NaN never reaches the weights: ``best.ckpt`` and ``last.ckpt`` stay
    those of the last good epochs (none is written when the first epoch fails).
    """

    def on_before_backward(self, trainer: L.Trainer, module: L.LightningModule, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteLossError(
                f"training stopped: the training loss is {loss.detach().float().item()} at epoch "
                f"{trainer.current_epoch + 1}, step {trainer.global_step + 1}; the checkpoints of earlier epochs are "
                f"kept. Lower optim.lr or set trainer.gradient_clip_val")
