"""The all-convolutional net (Springenberg, Dosovitskiy, Brox & Riedmiller, 2015), All-CNN-C for 32x32 inputs.

"Striving for simplicity": every max-pool of a plain ConvNet is replaced by a 3x3 convolution with stride 2, and
the fully connected classifier by 1x1 convolutions and global average pooling, so the network is convolutions and
ReLUs only. All-CNN-C (the paper's Table 2):

    3x3 conv 96 → 3x3 conv 96 → 3x3 conv 96 stride 2            32x32 → 16x16
    3x3 conv 192 → 3x3 conv 192 → 3x3 conv 192 stride 2         → 8x8
    3x3 conv 192 (valid) → 1x1 conv 192                         → 6x6    (the backbone ends here)
    1x1 conv 10 → global average → softmax                      (``paper_head``)

1,369,738 parameters with 10 classes (the paper's "1.4 M"). Dropout as in the paper: 20 % on the input image,
50 % after each strided convolution. The paper puts a ReLU on the class scores too (its "1x1 conv. 10 ReLU");
the head keeps it, though many re-implementations drop it.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from zoo.backbones.base import FeatureInfo, TappedSequential
from zoo.backbones.own import register_backbone

__all__ = ["AllConvNet", "AllConvHead"]


class AllConvHead(nn.Module):
    """1x1 convolution to the classes → ReLU → global average: ``feats (last [N, C, H, W]) -> [N, num_classes]``."""

    def __init__(self, *, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv9 = nn.Conv2d(in_channels, num_classes, 1)
        self.relu9 = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.flatten(self.pool(self.relu9(self.conv9(feats[-1]))))


class AllConvNet(TappedSequential):
    """All-CNN-C feature extractor.

    Args:
        in_chans: input channels.
        input_drop: dropout on the input image (0.2 in the paper).
        drop_rate: dropout after each strided convolution (0.5 in the paper).

    Returns from forward: ``[[N, 96, H/2], [N, 192, H/4], [N, 192, H/4 - 2]]`` (at 32x32: 16, 8 and 6 cells a side;
    the valid 3x3 convolution loses a border cell on each side).
    """

    paper_num_classes = 10

    def __init__(self, *, in_chans: int = 3, input_drop: float = 0.2, drop_rate: float = 0.5) -> None:
        super().__init__()
        layers: dict[str, nn.Module] = {"drop0": nn.Dropout(input_drop)}
        specs = [(in_chans, 96, 3, 1, 1), (96, 96, 3, 1, 1), (96, 96, 3, 2, 1),  # (c_in, c_out, kernel, stride, pad)
                 (96, 192, 3, 1, 1), (192, 192, 3, 1, 1), (192, 192, 3, 2, 1),
                 (192, 192, 3, 1, 0), (192, 192, 1, 1, 0)]
        for i, (c_in, c_out, k, stride, pad) in enumerate(specs, start=1):
            layers[f"conv{i}"] = nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad)
            layers[f"relu{i}"] = nn.ReLU(inplace=True)
            if stride == 2:
                layers[f"drop{i}"] = nn.Dropout(drop_rate)
        self.layers = nn.Sequential(OrderedDict(layers))
        self.feature_info = [FeatureInfo(96, 2, "layers.drop3"), FeatureInfo(192, 4, "layers.drop6"),
                             FeatureInfo(192, 4, "layers.relu8")]
        self._set_taps()

    def paper_head(self, *, num_classes: int) -> AllConvHead:
        """1x1 convolution to the classes, ReLU, global average pooling."""
        return AllConvHead(in_channels=192, num_classes=num_classes)


@register_backbone(default_input=(3, 32, 32))
def allconv_c(*, in_chans: int = 3) -> AllConvNet:
    """All-CNN-C (Springenberg et al., 2015): strided convolutions instead of pooling, for 32x32 inputs."""
    return AllConvNet(in_chans=in_chans)
