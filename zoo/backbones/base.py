"""The backbone contract every source (timm, torchvision, the zoo's own families) fulfils."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo.errors import ZooError

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

    def parameter_stages(self) -> dict[str, int]:
        """The feature level each parameter belongs to (names as in ``self.named_parameters()``).

        Level ``i`` holds the parameters registered after level ``i - 1``'s module, up to the end of level ``i``'s
        module (``feature_info[i].module``): the stem belongs to level 0, and parameters after the last tapped module
        (a final norm) to the last level. Registration order is the order the maps are computed in every source
        (timm's feature wrappers, torchvision's layer getters, the zoo's own chains).
        """
        order = [name for name, _ in self.body.named_modules()]
        position = {name: i for i, name in enumerate(order)}
        ends = []
        for level, info in enumerate(self.feature_info):
            name = next((c for c in (info.module, info.module.replace(".", "_"), f"model.{info.module}")
                         if c in position), None)
            if name is None:
                raise ZooError(f"backbone {self.name!r}: feature level {level}'s module {info.module!r} is not among "
                               f"its modules, so its parameters cannot be grouped by stage")
            ends.append(max(i for i, n in enumerate(order) if n == name or n.startswith(f"{name}.")))
        stages = {}
        for pname, _ in self.body.named_parameters():
            at = position[pname.rpartition(".")[0]]
            stages[f"body.{pname}"] = next((i for i, end in enumerate(ends) if at <= end), len(ends) - 1)
        return stages

    def layer_ids(self) -> tuple[dict[str, int], int]:
        """The layers of layer-wise learning-rate decay: ``({parameter name: layer id}, layers)``, the head being layer
        ``layers - 1``. timm models use timm's own grouping (``group_matcher``: per block); the others, and timm
        models without a matcher, their feature levels (``parameter_stages``)."""
        if self.source == "timm":
            from zoo.backbones.timm_source import timm_layer_ids

            found = timm_layer_ids(self.body, self.name.removeprefix("timm/"))
            if found is not None:
                return {f"body.{name}": layer for name, layer in found[0].items()}, found[1]
        return self.parameter_stages(), len(self.feature_info) + 1

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
