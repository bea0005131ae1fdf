"""VGG (Simonyan & Zisserman, 2015): depth from stacks of 3x3 convolutions.

Every convolution is 3x3, stride 1, padding 1 (two stacked have a 5x5 receptive field, three a 7x7, with fewer
parameters and more non-linearities); every pooling is 2x2 max, stride 2; the widths double after each pool from
64 to 512. The paper's configurations by depth (weight layers, counting the three FC layers):

- A, VGG-11: 64 | 128 | 256 256 | 512 512 | 512 512
- B, VGG-13: 64 64 | 128 128 | 256 256 | 512 512 | 512 512
- D, VGG-16: 64 64 | 128 128 | 256 256 256 | 512 512 512 | 512 512 512
- E, VGG-19: 64 64 | 128 128 | 256 x4 | 512 x4 | 512 x4

The classifier (``paper_head``) is FC 4096 → FC 4096 → FC 1000 on the 512x7x7 map of a 224x224 input; VGG-16
with it has 138,357,544 parameters, as torchvision's ``vgg16``. Configurations A-LRN and C (with 1x1 convolutions)
are not registered. Layers are named as in the authors' Caffe models (``conv3_2``, ``pool4``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from zoo.backbones.base import FeatureInfo, TappedSequential
from zoo.backbones.own import register_backbone
from zoo.backbones.paper_classifier import FullyConnectedHead

__all__ = ["VGG", "VGG_CONFIGS"]

# Convolutions per block (widths 64, 128, 256, 512, 512), by the paper's configuration letter.
VGG_CONFIGS: dict[str, tuple[int, ...]] = {
    "A": (1, 1, 2, 2, 2),
    "B": (2, 2, 2, 2, 2),
    "D": (2, 2, 3, 3, 3),
    "E": (2, 2, 4, 4, 4),
}
_WIDTHS = (64, 128, 256, 512, 512)


class VGG(TappedSequential):
    """VGG feature extractor (the convolutional part).

    Args:
        config: the paper's configuration letter, a key of ``VGG_CONFIGS``.
        in_chans: input channels.

    Returns from forward: the five pooled maps ``[N, C_i, H / 2^i, W / 2^i]`` for i = 1..5 with C = 64, 128, 256,
    512, 512 (at 224x224 the last is 512x7x7).
    """

    paper_num_classes = 1000

    def __init__(self, *, config: str, in_chans: int = 3) -> None:
        super().__init__()
        layers: dict[str, nn.Module] = {}
        c_in = in_chans
        for block, (convs, width) in enumerate(zip(VGG_CONFIGS[config], _WIDTHS), start=1):
            for i in range(1, convs + 1):
                layers[f"conv{block}_{i}"] = nn.Conv2d(c_in, width, 3, padding=1)
                layers[f"relu{block}_{i}"] = nn.ReLU(inplace=True)
                c_in = width
            layers[f"pool{block}"] = nn.MaxPool2d(2, 2)
        self.layers = nn.Sequential(OrderedDict(layers))
        self.feature_info = [FeatureInfo(w, 2**b, f"layers.pool{b}") for b, w in enumerate(_WIDTHS, start=1)]
        self._set_taps()

    def paper_head(self, *, num_classes: int) -> FullyConnectedHead:
        """FC6 4096 → FC7 4096 → FC8 on the 512x7x7 map, dropout 0.5 after FC6 and FC7."""
        return FullyConnectedHead(in_channels=512, grid=7, num_classes=num_classes)


def _create_vgg(config: str, *, in_chans: int) -> VGG:
    return VGG(config=config, in_chans=in_chans)


@register_backbone(default_input=(3, 224, 224))
def vgg11_a(*, in_chans: int = 3) -> VGG:
    """VGG-11, the paper's configuration A."""
    return _create_vgg("A", in_chans=in_chans)


@register_backbone(default_input=(3, 224, 224))
def vgg13_b(*, in_chans: int = 3) -> VGG:
    """VGG-13, the paper's configuration B."""
    return _create_vgg("B", in_chans=in_chans)


@register_backbone(default_input=(3, 224, 224))
def vgg16_d(*, in_chans: int = 3) -> VGG:
    """VGG-16, the paper's configuration D."""
    return _create_vgg("D", in_chans=in_chans)


@register_backbone(default_input=(3, 224, 224))
def vgg19_e(*, in_chans: int = 3) -> VGG:
    """VGG-19, the paper's configuration E."""
    return _create_vgg("E", in_chans=in_chans)
