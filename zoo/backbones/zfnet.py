"""ZFNet (Zeiler & Fergus, 2013): AlexNet with a smaller first layer, found by visualising its filters.

The visualisations showed AlexNet's 11x11/4 first layer left dead filters and aliasing, so conv1 became 96 7x7
filters with stride 2 and conv2 got stride 2 to keep the later sizes. At 224x224 (the paper's Fig. 3):
conv1 96 7x7/2 → 96x110x110 → ReLU → max-pool 3x3/2 → 96x55x55 → contrast norm; conv2 256 5x5/2 → 256x26x26 →
pool → 256x13x13 → norm; conv3 384, conv4 384, conv5 256 (3x3 pad 1) → pool → 256x6x6; then FC 4096, FC 4096,
FC 1000 (``paper_head``). The pools round up (Caffe's convention) to give the paper's 55 and 13. Every layer is
fully connected (the paper trained on one GPU); its "contrast normalisation" is AlexNet's local response norm.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from zoo.backbones.base import FeatureInfo, TappedSequential
from zoo.backbones.own import register_backbone
from zoo.backbones.paper_classifier import FullyConnectedHead

__all__ = ["ZFNet"]


def _lrn() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)  # AlexNet's (torch divides alpha by n)


class ZFNet(TappedSequential):
    """ZFNet feature extractor (the five convolutional layers).

    Args:
        in_chans: input channels.

    Returns from forward: ``[pool1 [N, 96, 55, 55], pool2 [N, 256, 13, 13], pool5 [N, 256, 6, 6]]`` at 224x224
    (strides 4, 16 and 32).
    """

    paper_num_classes = 1000

    def __init__(self, *, in_chans: int = 3) -> None:
        super().__init__()
        self.layers = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_chans, 96, 7, stride=2, padding=1), relu1=nn.ReLU(inplace=True),
            pool1=nn.MaxPool2d(3, 2, ceil_mode=True), norm1=_lrn(),
            conv2=nn.Conv2d(96, 256, 5, stride=2), relu2=nn.ReLU(inplace=True),
            pool2=nn.MaxPool2d(3, 2, ceil_mode=True), norm2=_lrn(),
            conv3=nn.Conv2d(256, 384, 3, padding=1), relu3=nn.ReLU(inplace=True),
            conv4=nn.Conv2d(384, 384, 3, padding=1), relu4=nn.ReLU(inplace=True),
            conv5=nn.Conv2d(384, 256, 3, padding=1), relu5=nn.ReLU(inplace=True),
            pool5=nn.MaxPool2d(3, 2, ceil_mode=True),
        ))
        # The maps after normalisation: what the next layer sees.
        self.feature_info = [FeatureInfo(96, 4, "layers.norm1"), FeatureInfo(256, 16, "layers.norm2"),
                             FeatureInfo(256, 32, "layers.pool5")]
        self._set_taps()

    def paper_head(self, *, num_classes: int) -> FullyConnectedHead:
        """FC6 4096 → FC7 4096 → FC8, dropout 0.5 after FC6 and FC7 (see ``zoo.backbones.paper_classifier``)."""
        return FullyConnectedHead(in_channels=256, grid=6, num_classes=num_classes)


@register_backbone(default_input=(3, 224, 224))
def zfnet(*, in_chans: int = 3) -> ZFNet:
    """ZFNet: AlexNet with conv1 7x7 stride 2 and conv2 stride 2."""
    return ZFNet(in_chans=in_chans)
