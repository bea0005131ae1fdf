"""GoogLeNet / Inception v1 (Szegedy et al., 2015): inception modules instead of large fully connected layers.

An inception module runs four branches side by side on the same input and concatenates their maps: a 1x1
convolution; 1x1 then 3x3; 1x1 then 5x5; 3x3 max-pool then 1x1. The 1x1 "reductions" before the large kernels
keep the cost down; the network ends in global average pooling and a single FC layer (``paper_head``), so it has
about a tenth of AlexNet's parameters. The auxiliary classifiers of the paper (training-only) are not built.

Two layouts, the same modules and widths (the paper's Table 1):

- ``googlenet``: the paper's, biased convolutions with ReLU, local response norm in the stem, a 5x5 convolution
  in the third branch, a 3x3/2 max-pool before inception 5a, dropout 0.4 before the classifier.
- ``googlenet_bn``: torchvision's ``googlenet`` layout, which its parameter count equals exactly (6,624,904 with
  1000 classes, ``aux_logits=False``): every convolution is conv (no bias) → BatchNorm → ReLU, no LRN, a 3x3 where
  the paper has the 5x5 (a known bug torchvision keeps for its weights, pytorch/vision#906), a 2x2/2 max-pool before
  inception 5a, dropout 0.2. Module names equal torchvision's: its weights load into ``PaperClassifier`` once
  their keys are prefixed with ``backbone.`` (``head.`` for ``fc``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from zoo.backbones.base import FeatureInfo
from zoo.backbones.own import register_backbone
from zoo.backbones.paper_classifier import PooledLinearHead

__all__ = ["ConvUnit", "Inception", "GoogLeNet"]

Layout = Literal["paper", "torchvision"]

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) of each module, the paper's Table 1.
_MODULES: dict[str, tuple[int, int, int, int, int, int]] = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


class ConvUnit(nn.Module):
    """Convolution → [BatchNorm] → ReLU; ``norm=False`` gives the paper's biased conv → ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, *, stride: int = 1, norm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=not norm)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001) if norm else nn.Identity()  # torchvision's eps
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """Four parallel branches, concatenated: ``[N, c_in, H, W] -> [N, c1 + c3 + c5 + pool_proj, H, W]``.

    Args:
        c_in: input channels.
        widths: ``(c1, c3_reduce, c3, c5_reduce, c5, pool_proj)``.
        big_kernel: the kernel of the third branch (5 in the paper, 3 in torchvision).
        norm: BatchNorm after each convolution.
    """

    def __init__(self, c_in: int, widths: tuple[int, ...], *, big_kernel: int, norm: bool) -> None:
        super().__init__()
        c1, c3r, c3, c5r, c5, pool_proj = widths
        self.branch1 = ConvUnit(c_in, c1, 1, norm=norm)
        self.branch2 = nn.Sequential(ConvUnit(c_in, c3r, 1, norm=norm), ConvUnit(c3r, c3, 3, norm=norm))
        self.branch3 = nn.Sequential(ConvUnit(c_in, c5r, 1, norm=norm), ConvUnit(c5r, c5, big_kernel, norm=norm))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     ConvUnit(c_in, pool_proj, 1, norm=norm))
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class GoogLeNet(nn.Module):
    """GoogLeNet feature extractor, without the auxiliary classifiers.

    Args:
        in_chans: input channels.
        layout: ``"paper"`` or ``"torchvision"`` (see the module doc).

    Returns from forward: ``[stem [N, 192, H/4], inception3b [N, 480, H/8], inception4e [N, 832, H/16],
    inception5b [N, 1024, H/32]]`` (at 224x224: 56, 28, 14 and 7 cells a side).
    """

    paper_num_classes = 1000

    def __init__(self, *, in_chans: int = 3, layout: Layout = "paper") -> None:
        super().__init__()
        norm = layout == "torchvision"
        self.layout = layout
        # Pools round up, as in the Caffe model: 112 → 56 → 28 → 14 → 7 at 224x224.
        self.conv1 = ConvUnit(in_chans, 64, 7, stride=2, norm=norm)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        if not norm:
            self.norm1 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)  # Caffe's values (alpha already / n)
        self.conv2 = ConvUnit(64, 64, 1, norm=norm)  # the 1x1 reduction before the stem's 3x3
        self.conv3 = ConvUnit(64, 192, 3, norm=norm)
        if not norm:
            self.norm2 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        c_in = 192
        for name, widths in _MODULES.items():
            if name == "inception4a":
                self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            if name == "inception5a":
                self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True) if norm else \
                    nn.MaxPool2d(3, stride=2, ceil_mode=True)
            module = Inception(c_in, widths, big_kernel=3 if norm else 5, norm=norm)
            self.add_module(name, module)
            c_in = module.out_channels
        self.feature_info = [FeatureInfo(192, 4, "conv3" if norm else "norm2"), FeatureInfo(480, 8, "inception3b"),
                             FeatureInfo(832, 16, "inception4e"), FeatureInfo(1024, 32, "inception5b")]
        self._taps = {f.module for f in self.feature_info}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for name, layer in self.named_children():
            x = layer(x)
            if name in self._taps:
                feats.append(x)
        return feats

    def paper_head(self, *, num_classes: int) -> PooledLinearHead:
        """Global average pooling → dropout (0.4 in the paper, 0.2 in torchvision) → FC."""
        drop = 0.4 if self.layout == "paper" else 0.2
        return PooledLinearHead(in_channels=1024, num_classes=num_classes, drop_rate=drop)


@register_backbone(default_input=(3, 224, 224))
def googlenet(*, in_chans: int = 3) -> GoogLeNet:
    """GoogLeNet (Inception v1) as in the paper: 5x5 branches, LRN, no BatchNorm, no auxiliary classifiers."""
    return GoogLeNet(in_chans=in_chans, layout="paper")


@register_backbone(default_input=(3, 224, 224))
def googlenet_bn(*, in_chans: int = 3) -> GoogLeNet:
    """GoogLeNet in torchvision's layout: BatchNorm, 3x3 in the 5x5 branch; equal parameter count."""
    return GoogLeNet(in_chans=in_chans, layout="torchvision")
