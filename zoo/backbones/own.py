"""The registry of the zoo's own architectures (one family per file in this package).

A builder is a keyword-only function ``(*, in_chans) -> nn.Module`` whose module has a
``feature_info: list[FeatureInfo]`` attribute and whose forward returns the maps in that order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from zoo.registry import Registry

__all__ = ["OwnBackbone", "OWN_BACKBONES", "register_backbone"]


@dataclass(frozen=True)
class OwnBackbone:
    """A registered builder and the input it was designed for ``(C, H, W)``."""

    builder: Callable[..., nn.Module]
    default_input: tuple[int, int, int]
    doc: str


OWN_BACKBONES: Registry[OwnBackbone] = Registry("zoo backbone")


def register_backbone(*, default_input: tuple[int, int, int]) -> Callable:
    """Registers a builder under its function name; a second builder with the same name raises."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        OWN_BACKBONES.register(fn.__name__, OwnBackbone(fn, default_input, doc))
        return fn

    return wrap
