"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012), with the paper's layer sizes.

At the 227x227 input the arithmetic works out (the paper's "224" does not: (224 - 11) / 4 + 1 is not whole):
conv1 96 11x11/4 → 96x55x55 (34,944 parameters) → ReLU → local response norm → max-pool 3x3/2 → 96x27x27;
conv2 256 5x5 pad 2 → norm → pool → 256x13x13; conv3 384, conv4 384, conv5 256 (3x3 pad 1) → pool → 256x6x6.
The paper's classifier (``paper_head``) is FC 4096 → FC 4096 → FC 1000, with dropout 0.5 after the two hidden ones.

The paper split the network over two GPUs: conv2, conv4 and conv5 only see the maps of their own GPU, which is a
grouped convolution with 2 groups. ``alexnet`` keeps that connectivity on one device (60,965,224 parameters with
the classifier, the paper's "60 million"); ``alexnet_single_tower`` connects every layer fully, as most
re-implementations do (62,378,344). torchvision's ``alexnet`` is the later 64-filter variant of the one-GPU paper
(Krizhevsky 2014), so neither count matches it.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from zoo.backbones.base import FeatureInfo, TappedSequential
from zoo.backbones.own import register_backbone
from zoo.backbones.paper_classifier import FullyConnectedHead

__all__ = ["AlexNet"]


def _lrn() -> nn.LocalResponseNorm:
    # The paper's k=2, n=5, alpha=1e-4, beta=0.75; torch divides alpha by n, the paper does not.
    return nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)


class AlexNet(TappedSequential):
    """AlexNet feature extractor (the five convolutional layers).

    Args:
        in_chans: input channels.
        groups: 2 for the paper's two-GPU connectivity of conv2, conv4 and conv5; 1 for fully connected layers.

    Returns from forward: ``[pool1 [N, 96, 27, 27], pool2 [N, 256, 13, 13], pool5 [N, 256, 6, 6]]`` at 227x227
    (strides 8, 16 and 32: each 32 more input pixels add one pool5 cell).
    """

    paper_num_classes = 1000

    def __init__(self, *, in_chans: int = 3, groups: int = 1) -> None:
        super().__init__()
        self.layers = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_chans, 96, 11, stride=4), relu1=nn.ReLU(inplace=True), norm1=_lrn(),
            pool1=nn.MaxPool2d(3, 2),
            conv2=nn.Conv2d(96, 256, 5, padding=2, groups=groups), relu2=nn.ReLU(inplace=True), norm2=_lrn(),
            pool2=nn.MaxPool2d(3, 2),
            conv3=nn.Conv2d(256, 384, 3, padding=1), relu3=nn.ReLU(inplace=True),
            conv4=nn.Conv2d(384, 384, 3, padding=1, groups=groups), relu4=nn.ReLU(inplace=True),
            conv5=nn.Conv2d(384, 256, 3, padding=1, groups=groups), relu5=nn.ReLU(inplace=True),
            pool5=nn.MaxPool2d(3, 2),
        ))
        self.feature_info = [FeatureInfo(96, 8, "layers.pool1"), FeatureInfo(256, 16, "layers.pool2"),
                             FeatureInfo(256, 32, "layers.pool5")]
        self._set_taps()

    def paper_head(self, *, num_classes: int) -> FullyConnectedHead:
        """FC6 4096 → FC7 4096 → FC8, dropout 0.5 after FC6 and FC7 (see ``zoo.backbones.paper_classifier``)."""
        return FullyConnectedHead(in_channels=256, grid=6, num_classes=num_classes)


@register_backbone(default_input=(3, 227, 227))
def alexnet(*, in_chans: int = 3) -> AlexNet:
    """AlexNet as published: conv2, conv4 and conv5 grouped as the paper's two GPUs were."""
    return AlexNet(in_chans=in_chans, groups=2)


@register_backbone(default_input=(3, 227, 227))
def alexnet_single_tower(*, in_chans: int = 3) -> AlexNet:
    """AlexNet with every layer fully connected (the paper's sizes on one GPU, no grouping)."""
    return AlexNet(in_chans=in_chans, groups=1)
