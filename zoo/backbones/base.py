"""The backbone contract every source (timm, torchvision, the zoo's own families) fulfils."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["FeatureInfo", "Backbone", "TappedSequential"]


@dataclass(frozen=True)
class FeatureInfo:
    """One feature map a backbone returns.

    Attributes:
        channels: C of the map ``[N, C, H, W]``.
        stride: total downsampling from the input. Strides are exact increments: growing the input by
            ``k * stride`` pixels grows the map by ``k`` cells, whatever the padding (valid-padded
            classics such as LeNet-5 lose a few border cells, so ``H`` is not simply ``H_in / stride``).
        module: the name of the module inside the source model that produces the map.
    """

    channels: int
    stride: int
    module: str


class Backbone(nn.Module):
    """Turns an image batch into a list of feature maps, one per entry of ``feature_info``.

    Args:
        body: a module whose forward returns a list, tuple or dict of ``[N, C_i, H_i, W_i]`` tensors
            in ``feature_info`` order.
        feature_info: what each returned map is.
        name: the registry name the backbone was built from.
        source: where the architecture comes from ("zoo", "timm" or "torchvision").
        in_chans: the number of input channels the body takes.
    """

    def __init__(
        self, *, body: nn.Module, feature_info: list[FeatureInfo], name: str, source: str, in_chans: int
    ) -> None:
        super().__init__()
        self.body = body
        self.feature_info = list(feature_info)
        self.name, self.source, self.in_chans = name, source, in_chans

    @property
    def out_channels(self) -> int:
        """Channels of the deepest map, what a pooled head consumes."""
        return self.feature_info[-1].channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        if isinstance(feats, dict):
            feats = list(feats.values())
        return list(feats)

    def extra_repr(self) -> str:
        levels = ", ".join(f"{f.channels}@/{f.stride}" for f in self.feature_info)
        return f"name={self.name!r}, source={self.source}, in_chans={self.in_chans}, features=[{levels}]"


class TappedSequential(nn.Module):
    """A plain chain of named layers (``self.layers``) whose taps are listed in ``self.feature_info``.

    Subclasses build ``self.layers`` (an ``nn.Sequential`` of named children) and ``self.feature_info`` with
    ``module="layers.<child>"``, then call ``self._set_taps()``; ``forward`` returns the tapped maps in order.
    """

    layers: nn.Sequential
    feature_info: list[FeatureInfo]

    def _set_taps(self) -> None:
        self._taps = {f.module.removeprefix("layers.") for f in self.feature_info}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for name, layer in self.layers.named_children():
            x = layer(x)
            if name in self._taps:
                feats.append(x)
        return feats
