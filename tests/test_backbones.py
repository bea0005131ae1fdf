"""The backbone contract, generated from the registry, and the registry's own behaviour.

Every zoo-own backbone runs at its ``default_input``; a fixed sample of timm and torchvision names (small models
at 64x64, so the file stays fast on a laptop CPU) stands for the libraries. Each one is checked for: one
``[N, C_i, H_i, W_i]`` map per ``feature_info`` entry with the declared channels; a finite gradient for every
trainable parameter (no dead parameters); and strides that are exact increments (``FeatureInfo`` doc).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pytest
import torch

import zoo.backbones
from zoo.backbones import Backbone, FeatureInfo, create_backbone, default_input, list_backbones, resolve_backbone
from zoo.backbones.own import OWN_BACKBONES, OwnBackbone, register_backbone
from zoo.errors import UnknownNameError, ZooError
from zoo.registry import Registry

LIBRARY_INPUT = (3, 64, 64)
# Small, fast models that between them cover the libraries' main families and their odd cases.
TIMM_SAMPLE = [
    "resnet18", "resnet10t", "mobilenetv3_small_050", "mobilenetv4_conv_small", "efficientnet_b0",
    "regnetx_002", "convnext_atto", "ghostnet_050", "lcnet_050", "mobilevit_xxs", "densenet121", "dla34",
    "efficientvit_m0",  # deepest map at stride 64
    "test_vit",  # a ViT built with dynamic_img_size: every map at stride 16
    "mambaout_femto",  # timm's maps are NHWC (output_fmt): permuted to NCHW
]
TORCHVISION_SAMPLE = [
    "torchvision/resnet18", "torchvision/mobilenet_v3_small", "torchvision/shufflenet_v2_x0_5",
    "torchvision/squeezenet1_1", "torchvision/mnasnet0_5", "torchvision/regnet_x_400mf", "torchvision/googlenet",
    "torchvision/efficientnet_b0", "torchvision/alexnet",
    "torchvision/vgg11",  # a map at stride 1
]
# A ViT at its native size; built with dynamic_img_size=True it also takes other multiples of its patch size.
FIXED_SIZE = {"test_vit3": (3, 160, 160)}

INPUTS: dict[str, tuple[int, int, int]] = {
    **{name: default_input(name) for name in OWN_BACKBONES.names()},
    **{name: LIBRARY_INPUT for name in TIMM_SAMPLE + TORCHVISION_SAMPLE},
    **FIXED_SIZE,
}


@dataclass(frozen=True)
class ContractRun:
    """What one backbone did on the contract's inputs; the three contract tests read it."""

    feature_info: list[FeatureInfo]
    maps: list[tuple[tuple[int, ...], bool]]  # (shape, all finite) of each map at INPUTS[name]
    dead: list[str]  # trainable parameters that got no gradient
    non_finite: list[str]  # trainable parameters whose gradient has a NaN or Inf
    trainable: int
    grow: int  # pixels added to H and W for the second forward: twice the largest stride
    grown_maps: list[tuple[int, ...]]  # shapes of the maps at (H + grow, W + grow)
    grown_error: str | None  # why the larger input failed, if it did


@functools.cache
def _contract_run(name: str) -> ContractRun:
    """One train-mode forward and backward at ``INPUTS[name]``, one eval forward at a larger input.

    Shared by the three contract tests so each backbone is built and run once (the file has to stay fast on a
    2-core CPU while the zoo grows); the module is not kept.
    """
    c, h, w = INPUTS[name]
    torch.manual_seed(0)
    backbone = create_backbone(name, in_chans=c).train()  # train mode: batch 2 so BatchNorm has statistics
    maps = backbone(torch.randn(2, c, h, w))
    assert isinstance(maps, list), f"forward returned {type(maps).__name__}, not a list"
    sum(m.mean() for m in maps).backward()
    trainable = [(n, p) for n, p in backbone.named_parameters() if p.requires_grad]
    grow = 2 * max(f.stride for f in backbone.feature_info)
    grown, grown_error = [], None
    try:
        with torch.no_grad():
            grown = backbone.eval()(torch.randn(2, c, h + grow, w + grow))
    except Exception as e:  # reported by the stride test, not by the other two
        grown_error = f"{type(e).__name__}: {e}"
    return ContractRun(
        feature_info=backbone.feature_info,
        maps=[(tuple(m.shape), bool(torch.isfinite(m).all())) for m in maps],
        dead=[n for n, p in trainable if p.grad is None],
        non_finite=[n for n, p in trainable if p.grad is not None and not torch.isfinite(p.grad).all()],
        trainable=len(trainable),
        grow=grow,
        grown_maps=[tuple(m.shape) for m in grown],
        grown_error=grown_error,
    )


def _maps(backbone: Backbone, c: int, h: int, w: int) -> list[torch.Tensor]:
    torch.manual_seed(0)
    with torch.no_grad():
        return backbone.eval()(torch.randn(2, c, h, w))


# --- the feature contract, for every registered zoo backbone and the library sample ---


@pytest.mark.parametrize("name", list(INPUTS))
def test_forward_returns_one_map_per_feature_info_entry(name: str) -> None:
    run = _contract_run(name)
    assert len(run.maps) == len(run.feature_info) > 0
    for i, ((shape, finite), info) in enumerate(zip(run.maps, run.feature_info)):
        assert len(shape) == 4 and shape[0] == 2, f"level {i} ({info.module}): shape {shape}"
        assert shape[1] == info.channels, f"level {i} ({info.module}): {shape[1]} channels, declared {info.channels}"
        assert finite, f"level {i} ({info.module}): NaN or Inf"


@pytest.mark.parametrize("name", list(INPUTS))
def test_every_trainable_parameter_gets_a_finite_gradient(name: str) -> None:
    run = _contract_run(name)
    assert run.trainable > 0
    assert not run.dead, f"{len(run.dead)} parameters take no part in the forward pass: {run.dead[:5]}"
    assert not run.non_finite, f"non-finite gradients: {run.non_finite[:5]}"


@pytest.mark.parametrize("name", list(INPUTS))
def test_strides_are_exact_increments(name: str) -> None:
    """``FeatureInfo.stride``: growing the input by ``k * stride`` pixels grows the map by exactly ``k`` cells."""
    run = _contract_run(name)
    assert run.grown_error is None, f"input grown by {run.grow} pixels fails: {run.grown_error}"
    for i, ((small, _), large, info) in enumerate(zip(run.maps, run.grown_maps, run.feature_info, strict=True)):
        dh, dw = large[2] - small[2], large[3] - small[3]
        assert (run.grow, run.grow) == (info.stride * dh, info.stride * dw), (
            f"level {i} ({info.module}): input grew by {run.grow}, map by {dh}x{dw} cells; declared stride "
            f"{info.stride}"
        )


@pytest.mark.parametrize(("name", "in_chans"), [("resnet10t", 1), ("torchvision/resnet18", 1), ("lenet5", 1),
                                                ("lenet5", 3), ("torchvision/mobilenet_v3_small", 4)])
def test_in_chans(name: str, in_chans: int) -> None:
    torch.manual_seed(0)
    backbone = create_backbone(name, in_chans=in_chans).eval()
    assert backbone.in_chans == in_chans
    _, h, w = default_input(name) if name in OWN_BACKBONES else LIBRARY_INPUT
    maps = _maps(backbone, in_chans, h, w)
    assert [m.shape[1] for m in maps] == [f.channels for f in backbone.feature_info]
    with pytest.raises(RuntimeError):  # the first layer really was rebuilt for in_chans
        _maps(backbone, in_chans + 1, h, w)


# --- names: resolution, suggestions, listing ---


@pytest.mark.parametrize(("name", "expected"), [
    ("lenet5", ("zoo", "lenet5")),
    ("zoo/lenet5_relu", ("zoo", "lenet5_relu")),
    ("resnet18", ("timm", "resnet18")),  # timm before torchvision
    ("timm/resnet18", ("timm", "resnet18")),
    ("torchvision/resnet18", ("torchvision", "resnet18")),
])
def test_resolve_backbone(name: str, expected: tuple[str, str]) -> None:
    assert resolve_backbone(name) == expected


def test_zoo_names_come_before_timm_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """A zoo family that takes a timm name wins over timm; ``timm/NAME`` still reaches timm."""
    own: Registry[OwnBackbone] = Registry("zoo backbone")
    own.register("lenet5", OWN_BACKBONES.get("lenet5"))
    own.register("resnet18", OWN_BACKBONES.get("lenet5"))
    monkeypatch.setattr(zoo.backbones, "OWN_BACKBONES", own)
    assert resolve_backbone("resnet18") == ("zoo", "resnet18")
    assert resolve_backbone("timm/resnet18") == ("timm", "resnet18")
    assert create_backbone("resnet18").source == "zoo"
    assert ("resnet18", "zoo") in list_backbones("resnet18")


@pytest.mark.parametrize(("name", "suggestion"), [
    ("resnet_18", "resnet18"),
    ("Resnet18", "resnet18"),
    ("lenet_5", "lenet5"),
    ("mobilenet_v3_small", "torchvision/mobilenet_v3_small"),  # a torchvision name needs its prefix
    ("timm/resnet_18", "resnet18"),
    ("torchvision/resnet_18", "resnet18"),
    ("zoo/lenet", "lenet5"),
    ("tourchvision/resnet18", "torchvision"),
])
def test_unknown_name_suggests_close_matches(name: str, suggestion: str) -> None:
    with pytest.raises(UnknownNameError) as info:
        resolve_backbone(name)
    assert suggestion in info.value.suggestions
    assert repr(suggestion) in str(info.value)
    with pytest.raises(UnknownNameError):  # create_backbone resolves the same way
        create_backbone(name)


@pytest.mark.parametrize(("name", "bad"), [("torchvision/nosuch", "nosuch"), ("nosource/x", "nosource")])
def test_unknown_name_without_close_match(name: str, bad: str) -> None:
    with pytest.raises(UnknownNameError) as info:
        resolve_backbone(name)
    assert repr(bad) in str(info.value)
    assert isinstance(info.value, ZooError)


def test_unknown_source_lists_the_sources() -> None:
    with pytest.raises(UnknownNameError) as info:
        resolve_backbone("nosource/x")
    assert all(source in str(info.value) for source in zoo.backbones.SOURCES)


@pytest.mark.parametrize("name", ["vit_b_16", "swin_t", "maxvit_t"])
def test_torchvision_token_models_point_to_timm(name: str) -> None:
    with pytest.raises(ZooError, match="timm") as info:
        create_backbone(f"torchvision/{name}")
    assert not isinstance(info.value, UnknownNameError)


def test_registering_a_name_twice_raises() -> None:
    registry: Registry[int] = Registry("thing")
    registry.register("a", 1)
    with pytest.raises(ZooError, match="'a' is registered twice"):
        registry.register("a", 2)
    assert registry.get("a") == 1
    with pytest.raises(UnknownNameError, match="did you mean 'a'"):
        registry.get("A_")


def test_registering_an_own_backbone_twice_raises() -> None:
    before = OWN_BACKBONES.get("lenet5")
    with pytest.raises(ZooError, match="'lenet5' is registered twice"):

        @register_backbone(default_input=(1, 32, 32))
        def lenet5(*, in_chans: int = 1) -> torch.nn.Module:  # noqa: F811
            return torch.nn.Identity()

    assert OWN_BACKBONES.get("lenet5") is before


def test_list_backbones() -> None:
    assert {("lenet5", "zoo"), ("lenet5_relu", "zoo")} <= set(list_backbones("lenet"))
    rows = list_backbones()
    assert {("resnet18", "timm"), ("torchvision/resnet18", "torchvision")} <= set(rows)
    assert {source for _, source in rows} == set(zoo.backbones.SOURCES)
    assert [n for n, s in rows if s == "zoo"] == OWN_BACKBONES.names()
    assert list_backbones("torchvision/resnet1*") == [
        ("torchvision/resnet101", "torchvision"), ("torchvision/resnet152", "torchvision"),
        ("torchvision/resnet18", "torchvision"),
    ]
    assert not any(name.startswith("torchvision/vit_") for name, _ in rows)


def test_swin_nhwc_maps_come_out_nchw() -> None:
    """Swin's timm feature maps are ``[N, H, W, C]`` (``output_fmt="NHWC"``); every head needs ``[N, C, H, W]``."""
    backbone = create_backbone("swin_tiny_patch4_window7_224", pretrained=False, in_chans=3).eval()
    with torch.no_grad():
        maps = backbone(torch.zeros(1, 3, 224, 224))
    assert [tuple(m.shape) for m in maps] == [(1, info.channels, 224 // info.stride, 224 // info.stride)
                                             for info in backbone.feature_info]
