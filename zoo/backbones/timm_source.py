"""Every timm model as a backbone, through ``timm.create_model(features_only=True)``."""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.backbones.base import FeatureInfo
from zoo.errors import CheckpointError, ZooError
from zoo.weights import read_weights_file

__all__ = ["timm_names", "create_timm_features"]

log = logging.getLogger(__name__)


@functools.cache
def timm_names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


def create_timm_features(
    name: str, *, in_chans: int = 3, weights_file: Path | None = None
) -> tuple[nn.Module, list[FeatureInfo]]:
    """Builds timm's ``name`` as a feature extractor.

    Args:
        weights_file: a timm-format file (the library's own, from its cache or the user) that timm loads
            into the full model before cutting it, adapting the first convolution to ``in_chans`` and
            dropping the classifier as it does for its own downloads.

    Returns:
        ``(body, feature_info)``: ``body(x)`` returns a list of ``[N, C_i, H_i, W_i]`` maps.
    """
    import timm

    kwargs = {}
    if weights_file is not None:
        kwargs = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(weights_file)}}
    try:
        body = _create(timm, name, in_chans=in_chans, **kwargs)
    except RuntimeError as e:  # strict load of a file with other keys
        raise ZooError(f"timm could not load {weights_file} into {name}: {str(e).splitlines()[0]}") from e
    except Exception as e:  # some architectures have no features_only support; checkpoint filters fail on alien files
        with_file = f" with weights {weights_file}" if weights_file is not None else ""
        raise ZooError(f"timm model {name!r} cannot be built as a feature extractor{with_file}: {e!r}") from e
    if weights_file is not None:
        _check_loaded(body, weights_file, name)
    if str(getattr(body, "output_fmt", "NCHW")).endswith("NHWC"):  # Swin, MambaOut, ...: channels-last maps
        body.register_forward_hook(_to_nchw)
    fi = body.feature_info
    info = [FeatureInfo(c, r, m) for c, r, m in zip(fi.channels(), fi.reduction(), fi.module_name())]
    return body, info


def _to_nchw(module: nn.Module, inputs: Any, maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """Forward hook: timm's ``[N, H, W, C]`` feature maps (``output_fmt="NHWC"``) as the ``[N, C, H, W]`` contract."""
    return [m.permute(0, 3, 1, 2) for m in maps]


def _create(timm: Any, name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(features_only=True)``; vision transformers get ``dynamic_img_size=True`` so they take any
    input size that is a multiple of their patch (position embeddings are interpolated), like the conv nets."""
    try:
        return timm.create_model(name, features_only=True, dynamic_img_size=True, **kwargs)
    except TypeError as e:  # the architecture has no such argument
        if "dynamic_img_size" not in str(e):
            raise
    return timm.create_model(name, features_only=True, **kwargs)


def _check_loaded(body: nn.Module, weights_file: Path, name: str) -> None:
    """Fails if timm loaded nothing from ``weights_file``.

    timm loads pretrained weights non-strictly when it builds a feature extractor (it drops the classifier), so a
    file of another architecture, or one in another key layout, would leave the model silently at random
    initialisation. Weight tensors of two or more dimensions start random, so one that equals a tensor of the
    file was loaded from it.
    """
    state = read_weights_file(weights_file)
    by_shape: dict[torch.Size, list[torch.Tensor]] = defaultdict(list)
    for value in [*state.values(), *(v for d in state.values() if isinstance(d, dict) for v in d.values())]:
        if torch.is_tensor(value):
            by_shape[value.shape].append(value)
    weights = [p for p in body.parameters() if p.ndim >= 2]
    loaded = sum(any(torch.equal(p, t.to(p.dtype)) for t in by_shape.get(p.shape, ())) for p in weights)
    if not loaded:
        raise CheckpointError(
            f"{weights_file}: timm loaded none of its tensors into {name} (file keys start {list(state)[:3]}); is "
            f"it the weights of another architecture?"
        )
    log.info("loaded %s into timm %s: %d of %d weight tensors come from the file", weights_file, name, loaded,
             len(weights))


def timm_layer_ids(body: nn.Module, name: str) -> tuple[dict[str, int], int] | None:
    """timm's own layer grouping of a ``features_only`` body — ``group_matcher``, what timm's layer-wise decay uses.

    Returns ``({body parameter name: layer id}, layers)``: ``layers`` counts the full model's layers, its classifier
    the last (so the body's deepest layer is one below the head, as in timm's own fine-tuning). ``None`` when the
    architecture has no group matcher or a parameter of the body has no counterpart in the full model.
    """
    import timm
    from timm.models import group_parameters

    with torch.device("meta"):
        full = timm.create_model(name, pretrained=False)
    if not hasattr(full, "group_matcher"):
        return None
    full_ids = group_parameters(full, full.group_matcher(coarse=False), reverse=True)
    ids = {}
    for pname, _ in body.named_parameters():
        match = next((c for c in _full_model_names(pname) if c in full_ids), None)
        if match is None:
            return None
        ids[pname] = full_ids[match]
    return ids, max(full_ids.values()) + 1


def _full_model_names(pname: str) -> list[str]:
    """Where a ``features_only`` wrapper's parameter lives in the full model: the same name, under the wrapper's
    ``model.``, or with a flattened ``stages_0`` module name split back into ``stages.0``."""
    top, _, rest = pname.partition(".")
    split = [f"{top[:i]}.{top[i + 1:]}.{rest}" for i, ch in enumerate(top) if ch == "_"]
    return [pname, pname.removeprefix("model."), *split]
