"""LeNet-5 (LeCun et al., 1998): the first ConvNet family of the zoo.

Layout as in the paper, for 32x32 inputs: C1 (6 maps, 5x5) → S2 (2x2 subsampling) → C3 (16 maps, 5x5) →
S4 → C5 (120 maps, 5x5, which is fully connected at 32x32). Valid padding throughout, tanh
activations and average-pool subsampling. The classifier (F6 + output) is a head, not part of the backbone.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.backbones.base import FeatureInfo
from zoo.backbones.own import register_backbone

__all__ = ["LeNet5"]


class LeNet5(nn.Module):
    """LeNet-5 feature extractor.

    Args:
        in_chans: input channels (1 for the paper's grey digits).
        act: activation module class; ``nn.Tanh`` as in the paper, ``nn.ReLU`` for the modern variant.

    Returns from forward: ``[s2 [N, 6, H/2], s4 [N, 16, H/4], c5 [N, 120, H/4]]`` with valid-padding border
    losses (at 32x32 input: 14x14, 5x5 and 1x1).
    """

    def __init__(self, *, in_chans: int = 1, act: type[nn.Module] = nn.Tanh) -> None:
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(in_chans, 6, 5), act())
        self.s2 = nn.AvgPool2d(2)
        self.c3 = nn.Sequential(nn.Conv2d(6, 16, 5), act())
        self.s4 = nn.AvgPool2d(2)
        self.c5 = nn.Sequential(nn.Conv2d(16, 120, 5), act())
        self.feature_info = [FeatureInfo(6, 2, "s2"), FeatureInfo(16, 4, "s4"), FeatureInfo(120, 4, "c5")]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s2 = self.s2(self.c1(x))
        s4 = self.s4(self.c3(s2))
        return [s2, s4, self.c5(s4)]


@register_backbone(default_input=(1, 32, 32))
def lenet5(*, in_chans: int = 1) -> LeNet5:
    """LeNet-5 as published: tanh, average pooling."""
    return LeNet5(in_chans=in_chans)


@register_backbone(default_input=(1, 32, 32))
def lenet5_relu(*, in_chans: int = 1) -> LeNet5:
    """LeNet-5 with ReLU activations, the usual modern re-implementation."""
    return LeNet5(in_chans=in_chans, act=nn.ReLU)
