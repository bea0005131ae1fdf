"""The backbone registry: one name space over the zoo's own families, timm and torchvision.

Names resolve in this order: the zoo's own architectures (``lenet5``), then timm's names as timm spells
them (``resnet18``, ``convnext_tiny``), then torchvision's classifiers under ``torchvision/`` (``torchvision/
resnet18``). ``timm/NAME`` and ``zoo/NAME`` pick a source explicitly.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import torch

from zoo.backbones import lenet as _lenet  # noqa: F401  (registers the family)
from zoo.backbones import alexnet as _alexnet  # noqa: F401
from zoo.backbones import zfnet as _zfnet  # noqa: F401
from zoo.backbones import vgg as _vgg  # noqa: F401
from zoo.backbones import googlenet as _googlenet  # noqa: F401
from zoo.backbones import resnet_classic as _resnet_classic  # noqa: F401
from zoo.backbones import allconv as _allconv  # noqa: F401
from zoo.backbones.base import Backbone, FeatureInfo
from zoo.backbones.own import OWN_BACKBONES, register_backbone
from zoo.backbones.timm_source import create_timm_features, timm_names
from zoo.backbones.torchvision_source import create_torchvision_features, reject_token_models, torchvision_names
from zoo.errors import ZooError, UnknownNameError
from zoo.weights import library_weights_file, load_state_dict_report, read_weights_file, strip_prefix

__all__ = [
    "Backbone", "FeatureInfo", "register_backbone", "resolve_backbone", "create_backbone", "list_backbones",
    "default_input",
]

SOURCES = ("zoo", "timm", "torchvision")
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
# Where a backbone's tensors sit inside files this project writes: checkpoints and exported state dicts.
_WRAPPER_PREFIXES = ("model.backbone.body.", "backbone.body.", "body.")


def resolve_backbone(name: str) -> tuple[str, str]:
    """``name`` → ``(source, name inside that source)``.

    Raises:
        UnknownNameError: with the closest registered names.
    """
    source, _, bare = name.rpartition("/")
    if source:
        if source not in SOURCES:
            raise UnknownNameError("backbone source", source, SOURCES)
        known = {"zoo": OWN_BACKBONES.names, "timm": timm_names, "torchvision": torchvision_names}[source]()
        if source == "torchvision":
            reject_token_models(bare)  # a pointer to timm says more than "unknown name"
        if bare not in known:
            raise UnknownNameError(f"{source} backbone", bare, known)
        return source, bare
    if name in OWN_BACKBONES:
        return "zoo", name
    if name in timm_names():
        return "timm", name
    if name in torchvision_names():  # difflib would rank timm's look-alikes first
        raise UnknownNameError("backbone", name, [f"torchvision/{name}"])
    raise UnknownNameError(
        "backbone", name, [*OWN_BACKBONES, *timm_names(), *(f"torchvision/{n}" for n in torchvision_names())]
    )


def list_backbones(pattern: str | None = None) -> list[tuple[str, str]]:
    """``(name, source)`` of every backbone whose name matches the shell-style ``pattern`` (or contains it)."""
    rows = [(n, "zoo") for n in OWN_BACKBONES]
    rows += [(n, "timm") for n in sorted(timm_names())]
    rows += [(f"torchvision/{n}", "torchvision") for n in torchvision_names()]
    if pattern:
        glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
        rows = [r for r in rows if fnmatch.fnmatch(r[0], glob)]
    return rows


def default_input(name: str) -> tuple[int, int, int]:
    """The ``(C, H, W)`` input a backbone was designed for (224x224 RGB for the libraries' models)."""
    source, bare = resolve_backbone(name)
    return OWN_BACKBONES.get(bare).default_input if source == "zoo" else (3, 224, 224)


def _wrapper_state(state: dict) -> dict[str, torch.Tensor] | None:
    """The backbone part of a project checkpoint or exported state dict, keyed like ``Backbone.body``."""
    state = state.get("state_dict", state)
    for prefix in _WRAPPER_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            return strip_prefix(state, prefix)
    return None


def _is_path(value: str) -> bool:
    return os.sep in value or value.endswith(_WEIGHT_SUFFIXES) or Path(value).expanduser().exists()


def create_backbone(name: str, *, pretrained: bool | str = False, in_chans: int = 3) -> Backbone:
    """Builds a registered backbone.

    Args:
        name: a registry name (see module doc).
        pretrained: ``False``; ``True`` for the library's default weights; a weight tag (timm's
            ``"a1_in1k"``, torchvision's ``"IMAGENET1K_V1"``); or a local file: ``.safetensors``, a zoo
            checkpoint, or a plain state dict, in the zoo's or the source library's key layout. Library
            weights come from the local cache only.
        in_chans: input channels; pretrained first-layer filters are adapted to them.

    Returns:
        A :class:`Backbone`: ``forward(x [N, in_chans, H, W]) -> list of [N, C_i, H/s_i, W/s_i]``.
    """
    source, bare = resolve_backbone(name)
    file: Path | None = None
    tag: str | None = None
    if isinstance(pretrained, str):
        if _is_path(pretrained):
            file = Path(pretrained).expanduser()
            if not file.is_file():
                raise ZooError(f"pretrained weights file {pretrained!r} does not exist")
        else:
            tag = pretrained
    if source == "zoo" and (pretrained is True or tag):
        raise ZooError(
            f"zoo backbone {bare!r} has no published weights; pass a file: model.backbone.pretrained=PATH"
        )
    if source != "zoo" and (pretrained is True or tag):
        file = library_weights_file(source, bare, tag)
    state = read_weights_file(file) if file is not None else None
    wrapped = _wrapper_state(state) if state is not None else None
    what = f"{file} into backbone {name}"

    if source == "zoo":
        body = OWN_BACKBONES.get(bare).builder(in_chans=in_chans)
        info = body.feature_info
    elif source == "timm":
        body, info = create_timm_features(bare, in_chans=in_chans,
                                          weights_file=file if state is not None and wrapped is None else None)
    else:
        library_state = state.get("state_dict", state) if state is not None and wrapped is None else None
        body, info = create_torchvision_features(bare, in_chans=in_chans, state=library_state, what=what)
    if wrapped is not None:
        load_state_dict_report(body, wrapped, what=what)
    elif source == "zoo" and state is not None:
        load_state_dict_report(body, state.get("state_dict", state), what=what)
    return Backbone(body=body, feature_info=info, name=name, source=source, in_chans=in_chans)
