"""The classic residual networks, 2015-2016, each with its plain counterpart.

- Original ResNet (He et al., 2015, "Deep Residual Learning"): a unit computes ``relu(x + F(x))`` where the
  residual branch ``F`` is two 3x3 convolutions (basic) or 1x1-3x3-1x1 (bottleneck), each followed by BatchNorm.
  ImageNet form (ResNet-18/34/50): 7x7/2 stem, 3x3/2 max-pool, four stages of 64-512 (bottleneck: 256-2048)
  channels; projection shortcuts (the paper's option B: 1x1 conv + BN where the shape changes) and the downsampling
  stride on the first convolution of a stage's first unit, as the paper says (torchvision's and timm's resnet50
  are "v1.5", with the stride on the 3x3: same parameters, different arithmetic). CIFAR form (ResNet-6n+2:
  20/32/56/110, 32x32 inputs): 3x3 stem and three stages of n basic units with 16/32/64 channels, parameter-free
  shortcuts (option A: subsample and zero-pad the new channels), as the paper's CIFAR experiments.
- Plain nets (``plain*``): the same layers without any shortcut, ``relu(F(x))``, the paper's baselines for the
  degradation problem. They lack the projection convolutions, so the ImageNet ones have slightly fewer parameters.
- Pre-activation ResNet (He et al., 2016, "Identity Mappings"): ``x + F(x)`` with ``F`` = BN-ReLU-conv-BN-ReLU-
  conv(-...), so the shortcut path stays a pure identity; the stem has no BN-ReLU of its own (the first unit's
  pre-activation follows it) and a final BN-ReLU closes the last stage.
- Stochastic depth (Huang et al., 2016): unit ``l`` of ``L`` survives with ``p_l = 1 - l / L * (1 - p_L)``; in
  training its branch is dropped (multiplied by 0) for the whole mini-batch with probability ``1 - p_l``; in
  evaluation the branch is scaled by ``p_l``, its expected value. ``resnet110_sd``: the paper's ResNet-110 with
  ``p_L = 0.5``.
- Wide ResNet (Zagoruyko & Komodakis, 2016), WRN-d-k: the pre-activation CIFAR net with the stage widths
  multiplied by ``k`` (16k, 32k, 64k), (d - 4) / 6 units per stage, 1x1 projection shortcuts, optional dropout
  between a unit's two convolutions.

The classifier (``paper_head``) is global average pooling then one FC layer: 1000 classes for the ImageNet nets,
10 (CIFAR-10) for the others.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from zoo.backbones.base import FeatureInfo
from zoo.backbones.own import register_backbone
from zoo.backbones.paper_classifier import PooledLinearHead

__all__ = ["PadShortcut", "ResidualUnit", "ClassicResNet", "wide_resnet"]

Shortcut = Literal["A", "B"]


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)  # BN follows: no bias


class PadShortcut(nn.Module):
    """The paper's option A: ``[N, c_in, H, W] -> [N, c_out, ceil(H/stride), ceil(W/stride)]`` with no parameters
    (every ``stride``-th cell, the extra ``c_out - c_in`` channels zero)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = c_out - c_in, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))


class ResidualUnit(nn.Module):
    """One unit: ``act(shortcut(x) + b * F(x))``, in the post- or pre-activation form, or plain (no shortcut).

    Args:
        c_in, c_out: input and output channels.
        stride: of the unit's first convolution (and its shortcut).
        bottleneck: ``F`` = 1x1 (c_out / 4) → 3x3 → 1x1 (c_out), else 3x3 → 3x3.
        preact: pre-activation form (BN-ReLU before each convolution, nothing after the addition).
        skip: ``False`` builds the plain counterpart: no shortcut at all.
        shortcut: where the shape changes, ``"A"`` (zero-padding, no parameters) or ``"B"`` (1x1 projection).
        survival: stochastic depth's ``p_l``; 1 keeps the branch always.
        drop_rate: dropout between the convolutions (Wide ResNet).

    Forward: ``[N, c_in, H, W] -> [N, c_out, ceil(H / stride), ceil(W / stride)]``.
    """

    def __init__(self, c_in: int, c_out: int, *, stride: int = 1, bottleneck: bool = False, preact: bool = False,
                 skip: bool = True, shortcut: Shortcut = "B", survival: float = 1.0, drop_rate: float = 0.0) -> None:
        super().__init__()
        if not 0.0 < survival <= 1.0:
            raise ValueError(f"survival probability must be in (0, 1], got {survival}")
        self.survival = survival
        self.pre_act = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(inplace=True)) if preact else None
        mid = c_out // 4 if bottleneck else c_out
        kernels = (1, 3, 1) if bottleneck else (3, 3)
        widths = (c_in, *([mid] * (len(kernels) - 1)), c_out)
        layers: dict[str, nn.Module] = {}
        for i, k in enumerate(kernels, start=1):
            if preact and i > 1:
                layers |= {f"bn{i - 1}": nn.BatchNorm2d(widths[i - 1]), f"relu{i - 1}": nn.ReLU(inplace=True)}
            if drop_rate and i == len(kernels):
                layers["drop"] = nn.Dropout(drop_rate)
            layers[f"conv{i}"] = _conv(widths[i - 1], widths[i], k, stride if i == 1 else 1)
            if not preact:
                layers[f"bn{i}"] = nn.BatchNorm2d(widths[i])
                if i < len(kernels):
                    layers[f"relu{i}"] = nn.ReLU(inplace=True)
        self.branch = nn.Sequential(OrderedDict(layers))
        self.shortcut: nn.Module | None = None
        self.project = False  # whether the shortcut reads the pre-activated input (a projection does)
        if skip and (stride != 1 or c_in != c_out):
            if shortcut == "A":
                self.shortcut = PadShortcut(c_in, c_out, stride)
            else:
                proj = [_conv(c_in, c_out, 1, stride)] + ([] if preact else [nn.BatchNorm2d(c_out)])
                self.shortcut, self.project = nn.Sequential(*proj), True
        elif skip:
            self.shortcut = nn.Identity()
        self.relu = None if preact else nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_act(x) if self.pre_act is not None else x
        y = self.branch(pre)
        if self.survival < 1.0:
            if self.training:
                # One draw per mini-batch as in the paper. Multiplying rather than skipping the branch keeps every
                # parameter in the graph (DDP requires it), at the cost of the paper's training speed-up.
                y = y * (torch.rand((), device=y.device) < self.survival).to(y.dtype)
            else:
                y = y * self.survival
        if self.shortcut is not None:
            y = y + self.shortcut(pre if self.project else x)
        return self.relu(y) if self.relu is not None else y


class ClassicResNet(nn.Module):
    """A ResNet, pre-activation ResNet, plain net or Wide ResNet feature extractor (see the module doc).

    Args:
        layers: units per stage.
        widths: output channels per stage (bottleneck: the expanded width, 4x the inner one).
        stem: ``"imagenet"`` (7x7/2 conv, 64 channels, then a 3x3/2 max-pool opening stage 1) or ``"cifar"``
            (3x3 conv, 16 channels).
        bottleneck: bottleneck units instead of basic ones.
        preact: pre-activation units; the stem has no BN-ReLU and a BN-ReLU follows the last stage.
        skip: ``False`` for the plain counterpart.
        shortcut: ``"A"`` or ``"B"`` where a unit changes shape (see :class:`ResidualUnit`).
        final_survival: stochastic depth's ``p_L`` for the last unit, decaying linearly from 1; 1 disables it.
        drop_rate: dropout inside each unit (Wide ResNet).
        in_chans: input channels.

    Returns from forward: ``[stem, stage1, ..., stageS]``; ImageNet stem: strides 2, 4, 8, 16, 32; CIFAR stem:
    strides 1, 1, 2, 4 (a 32x32 input gives 32, 32, 16 and 8 cells a side).
    """

    def __init__(self, *, layers: tuple[int, ...], widths: tuple[int, ...], stem: Literal["imagenet", "cifar"],
                 bottleneck: bool = False, preact: bool = False, skip: bool = True, shortcut: Shortcut = "B",
                 final_survival: float = 1.0, drop_rate: float = 0.0, in_chans: int = 3) -> None:
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError(f"layers {layers} and widths {widths} must have one entry per stage")
        imagenet = stem == "imagenet"
        self.paper_num_classes = 1000 if imagenet else 10
        c = 64 if imagenet else 16
        conv = _conv(in_chans, c, 7, 2) if imagenet else _conv(in_chans, c, 3)
        self.stem = nn.Sequential(conv) if preact else nn.Sequential(conv, nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        stride = 2 if imagenet else 1
        self.feature_info = [FeatureInfo(c, stride, "stem")]
        total, index = sum(layers), 0
        for s, (n, width) in enumerate(zip(layers, widths), start=1):
            units: list[nn.Module] = [nn.MaxPool2d(3, 2, padding=1)] if imagenet and s == 1 else []
            stride *= 2 if imagenet or s > 1 else 1
            for i in range(n):
                index += 1
                units.append(ResidualUnit(
                    c, width, stride=2 if i == 0 and s > 1 else 1, bottleneck=bottleneck, preact=preact,
                    skip=skip, shortcut=shortcut, survival=1.0 - index / total * (1.0 - final_survival),
                    drop_rate=drop_rate))
                c = width
            self.add_module(f"stage{s}", nn.Sequential(*units))
            self.feature_info.append(FeatureInfo(width, stride, f"stage{s}"))
        self.num_stages = len(layers)
        self.final_act = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True)) if preact else None
        if preact:
            self.feature_info[-1] = FeatureInfo(c, stride, "final_act")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for s in range(1, self.num_stages + 1):
            feats.append(getattr(self, f"stage{s}")(feats[-1]))
        if self.final_act is not None:
            feats[-1] = self.final_act(feats[-1])
        return feats

    def paper_head(self, *, num_classes: int) -> PooledLinearHead:
        """Global average pooling → FC."""
        return PooledLinearHead(in_channels=self.feature_info[-1].channels, num_classes=num_classes)


def _imagenet(depth: int, **kwargs) -> ClassicResNet:
    layers = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}[depth]
    widths = (256, 512, 1024, 2048) if depth >= 50 else (64, 128, 256, 512)
    return ClassicResNet(layers=layers, widths=widths, stem="imagenet", bottleneck=depth >= 50, **kwargs)


def _cifar(depth: int, **kwargs) -> ClassicResNet:
    n, rest = divmod(depth - 2, 6)  # 6n convolutions in the stages, plus the stem and the classifier
    if rest or n < 1:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    return ClassicResNet(layers=(n, n, n), widths=(16, 32, 64), stem="cifar", shortcut="A", **kwargs)


def wide_resnet(*, depth: int, widen_factor: int, drop_rate: float = 0.0, in_chans: int = 3) -> ClassicResNet:
    """WRN-depth-widen_factor for 32x32 inputs: stages of 16k, 32k, 64k channels, (depth - 4) / 6 units each.

    Raises:
        ValueError: ``depth`` is not 6n+4 or ``widen_factor`` < 1.
    """
    n, rest = divmod(depth - 4, 6)
    if rest or n < 1 or widen_factor < 1:
        raise ValueError(f"Wide ResNet needs depth 6n+4 and widen_factor >= 1, got {depth}, {widen_factor}")
    k = widen_factor
    return ClassicResNet(layers=(n, n, n), widths=(16 * k, 32 * k, 64 * k), stem="cifar", preact=True,
                         shortcut="B", drop_rate=drop_rate, in_chans=in_chans)


@register_backbone(default_input=(3, 224, 224))
def resnet18_v1(*, in_chans: int = 3) -> ClassicResNet:
    """ResNet-18 (He et al., 2015), post-activation, ImageNet form."""
    return _imagenet(18, in_chans=in_chans)


@register_backbone(default_input=(3, 224, 224))
def resnet34_v1(*, in_chans: int = 3) -> ClassicResNet:
    """ResNet-34 (He et al., 2015), post-activation, ImageNet form."""
    return _imagenet(34, in_chans=in_chans)


@register_backbone(default_input=(3, 224, 224))
def resnet50_v1(*, in_chans: int = 3) -> ClassicResNet:
    """ResNet-50 (He et al., 2015), bottleneck units, downsampling stride on the first 1x1."""
    return _imagenet(50, in_chans=in_chans)


@register_backbone(default_input=(3, 224, 224))
def preact_resnet18(*, in_chans: int = 3) -> ClassicResNet:
    """Pre-activation ResNet-18 (He et al., 2016), ImageNet form."""
    return _imagenet(18, preact=True, in_chans=in_chans)


@register_backbone(default_input=(3, 224, 224))
def preact_resnet34(*, in_chans: int = 3) -> ClassicResNet:
    """Pre-activation ResNet-34 (He et al., 2016), ImageNet form."""
    return _imagenet(34, preact=True, in_chans=in_chans)


@register_backbone(default_input=(3, 224, 224))
def preact_resnet50(*, in_chans: int = 3) -> ClassicResNet:
    """Pre-activation ResNet-50 (He et al., 2016), ImageNet form."""
    return _imagenet(50, preact=True, in_chans=in_chans)


@register_backbone(default_input=(3, 224, 224))
def plain18(*, in_chans: int = 3) -> ClassicResNet:
    """Plain-18: ResNet-18 without shortcuts (the paper's baseline)."""
    return _imagenet(18, skip=False, in_chans=in_chans)


@register_backbone(default_input=(3, 224, 224))
def plain34(*, in_chans: int = 3) -> ClassicResNet:
    """Plain-34: ResNet-34 without shortcuts (the paper's baseline)."""
    return _imagenet(34, skip=False, in_chans=in_chans)


@register_backbone(default_input=(3, 224, 224))
def plain50(*, in_chans: int = 3) -> ClassicResNet:
    """Plain-50: ResNet-50 without shortcuts."""
    return _imagenet(50, skip=False, in_chans=in_chans)


@register_backbone(default_input=(3, 32, 32))
def resnet20(*, in_chans: int = 3) -> ClassicResNet:
    """ResNet-20 for CIFAR (3 stages x 3 units, 16/32/64 channels, option A shortcuts)."""
    return _cifar(20, in_chans=in_chans)


@register_backbone(default_input=(3, 32, 32))
def resnet32(*, in_chans: int = 3) -> ClassicResNet:
    """ResNet-32 for CIFAR (3 stages x 5 units)."""
    return _cifar(32, in_chans=in_chans)


@register_backbone(default_input=(3, 32, 32))
def resnet56(*, in_chans: int = 3) -> ClassicResNet:
    """ResNet-56 for CIFAR (3 stages x 9 units)."""
    return _cifar(56, in_chans=in_chans)


@register_backbone(default_input=(3, 32, 32))
def resnet110(*, in_chans: int = 3) -> ClassicResNet:
    """ResNet-110 for CIFAR (3 stages x 18 units)."""
    return _cifar(110, in_chans=in_chans)


@register_backbone(default_input=(3, 32, 32))
def resnet110_sd(*, in_chans: int = 3) -> ClassicResNet:
    """ResNet-110 with stochastic depth, survival decaying linearly to 0.5 (Huang et al., 2016)."""
    return _cifar(110, final_survival=0.5, in_chans=in_chans)


@register_backbone(default_input=(3, 32, 32))
def preact_resnet20(*, in_chans: int = 3) -> ClassicResNet:
    """Pre-activation ResNet-20 for CIFAR."""
    return _cifar(20, preact=True, in_chans=in_chans)


@register_backbone(default_input=(3, 32, 32))
def preact_resnet32(*, in_chans: int = 3) -> ClassicResNet:
    """Pre-activation ResNet-32 for CIFAR."""
    return _cifar(32, preact=True, in_chans=in_chans)


@register_backbone(default_input=(3, 32, 32))
def preact_resnet56(*, in_chans: int = 3) -> ClassicResNet:
    """Pre-activation ResNet-56 for CIFAR."""
    return _cifar(56, preact=True, in_chans=in_chans)


@register_backbone(default_input=(3, 32, 32))
def preact_resnet110(*, in_chans: int = 3) -> ClassicResNet:
    """Pre-activation ResNet-110 for CIFAR."""
    return _cifar(110, preact=True, in_chans=in_chans)


@register_backbone(default_input=(3, 32, 32))
def plain20(*, in_chans: int = 3) -> ClassicResNet:
    """Plain-20: ResNet-20 without shortcuts (the degradation experiment's shallow baseline)."""
    return _cifar(20, skip=False, in_chans=in_chans)


@register_backbone(default_input=(3, 32, 32))
def plain32(*, in_chans: int = 3) -> ClassicResNet:
    """Plain-32: ResNet-32 without shortcuts."""
    return _cifar(32, skip=False, in_chans=in_chans)


@register_backbone(default_input=(3, 32, 32))
def plain56(*, in_chans: int = 3) -> ClassicResNet:
    """Plain-56: ResNet-56 without shortcuts (the degradation experiment's deep baseline)."""
    return _cifar(56, skip=False, in_chans=in_chans)


@register_backbone(default_input=(3, 32, 32))
def plain110(*, in_chans: int = 3) -> ClassicResNet:
    """Plain-110: ResNet-110 without shortcuts."""
    return _cifar(110, skip=False, in_chans=in_chans)


@register_backbone(default_input=(3, 32, 32))
def wrn_16_4(*, in_chans: int = 3) -> ClassicResNet:
    """Wide ResNet WRN-16-4 for CIFAR (2 units per stage, widths 64/128/256)."""
    return wide_resnet(depth=16, widen_factor=4, in_chans=in_chans)


@register_backbone(default_input=(3, 32, 32))
def wrn_28_10(*, in_chans: int = 3) -> ClassicResNet:
    """Wide ResNet WRN-28-10 for CIFAR (4 units per stage, widths 160/320/640)."""
    return wide_resnet(depth=28, widen_factor=10, in_chans=in_chans)
