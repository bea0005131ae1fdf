"""The published classifiers of the case-study families: backbone + the paper's own classification layers.

A zoo backbone stops before the classifier (a head from ``heads/`` goes on top), but the numbers a paper reports
(VGG-16's 138,357,544 parameters, AlexNet's 60 M) count its classifier too. A family whose paper defines one gives
its backbone module two members:

- ``paper_num_classes: int``: the class count of the paper's data set (1000 for ImageNet, 10 for CIFAR-10);
- ``paper_head(*, num_classes: int) -> nn.Module``: the paper's classification layers, a module that takes the
  backbone's list of feature maps and returns logits ``[N, num_classes]``.

``zoo summary`` and the parameter-count tests build the full network through :func:`paper_classifier`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from zoo.backbones.own import OWN_BACKBONES
from zoo.errors import ZooError

__all__ = ["FullyConnectedHead", "PooledLinearHead", "PaperClassifier", "paper_classifier", "with_paper_head"]


class FullyConnectedHead(nn.Module):
    """The 2012-2014 classifier (AlexNet, ZFNet, VGG): flatten the last map, then FC-ReLU-dropout layers.

    Args:
        in_channels: channels of the backbone's last map.
        grid: the side of that map at the paper's input (6 for AlexNet and ZFNet, 7 for VGG). Other inputs are
            average-pooled to it first (as torchvision does), which is the identity at the paper's input.
        hidden: widths of the hidden FC layers (the papers' two 4096s).
        num_classes: outputs.
        drop_rate: dropout after each hidden layer (0.5 in the papers).

    Forward: ``feats (list, last [N, in_channels, H, W]) -> logits [N, num_classes]``.
    """

    def __init__(self, *, in_channels: int, grid: int, num_classes: int, hidden: tuple[int, ...] = (4096, 4096),
                 drop_rate: float = 0.5) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.flatten = nn.Flatten()
        widths = (in_channels * grid * grid, *hidden)
        layers: dict[str, nn.Module] = {}
        for n, (w_in, w_out) in enumerate(zip(widths, widths[1:]), start=6):  # Caffe's names: fc6, fc7, fc8
            layers |= {f"fc{n}": nn.Linear(w_in, w_out), f"relu{n}": nn.ReLU(inplace=True),
                       f"drop{n}": nn.Dropout(drop_rate)}
        layers[f"fc{6 + len(hidden)}"] = nn.Linear(widths[-1], num_classes)
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.layers(self.flatten(self.pool(feats[-1])))


class PooledLinearHead(nn.Module):
    """The post-2014 classifier (GoogLeNet, ResNet): global average pooling, dropout, one FC layer.

    Forward: ``feats (list, last [N, in_channels, H, W]) -> logits [N, num_classes]``.
    """

    def __init__(self, *, in_channels: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.drop = nn.Dropout(drop_rate) if drop_rate else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.fc(self.drop(self.flatten(self.pool(feats[-1]))))


class PaperClassifier(nn.Module):
    """``backbone`` then the paper's ``head``: ``forward(x [N, C, H, W]) -> logits [N, num_classes]``.

    Args:
        backbone: a zoo backbone body (forward returns its list of feature maps).
        head: the paper's classification layers, taking that list.
    """

    def __init__(self, *, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def with_paper_head(body: nn.Module, *, num_classes: int | None = None) -> PaperClassifier:
    """Puts the paper's classifier on an already built backbone body (see the module doc for the protocol).

    Raises:
        ZooError: the body's family defines no classifier, or ``num_classes`` < 1.
    """
    if not hasattr(body, "paper_head"):
        raise ZooError(f"{type(body).__name__} has no paper classifier; the families with one: alexnet, "
                       "zfnet, vgg, googlenet, resnet_classic (resnet*, preact_*, plain*, wrn_*), allconv")
    num_classes = body.paper_num_classes if num_classes is None else num_classes
    if num_classes < 1:
        raise ZooError(f"num_classes must be at least 1, got {num_classes}")
    return PaperClassifier(backbone=body, head=body.paper_head(num_classes=num_classes))


def paper_classifier(name: str, *, num_classes: int | None = None, in_chans: int = 3) -> PaperClassifier:
    """Builds the zoo backbone ``name`` with its paper's classifier on top.

    Args:
        name: a zoo backbone name (``vgg16_d``, ``resnet50_v1``, ...; ``zoo/`` prefix allowed).
        num_classes: classifier outputs; ``None`` for the paper's data set (1000 for ImageNet nets, 10 for
            the CIFAR nets).
        in_chans: input channels.

    Raises:
        UnknownNameError: ``name`` is not a zoo backbone.
        ZooError: the family defines no classifier, or ``num_classes`` < 1.
    """
    body = OWN_BACKBONES.get(name.removeprefix("zoo/")).builder(in_chans=in_chans)
    return with_paper_head(body, num_classes=num_classes)
