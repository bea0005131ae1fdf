"""Every timm model as a backbone, through ``timm.create_model(features_only=True)``."""

from __future__ import annotations

import functools
from pathlib import Path

from torch import nn

from zoo.backbones.base import FeatureInfo
from zoo.errors import ZooError

__all__ = ["timm_names", "create_timm_features"]


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
        body = timm.create_model(name, features_only=True, in_chans=in_chans, **kwargs)
    except RuntimeError as e:  # strict load of a file with other keys
        raise ZooError(f"timm could not load {weights_file} into {name}: {str(e).splitlines()[0]}") from e
    except Exception as e:  # some architectures have no features_only support
        raise ZooError(f"timm model {name!r} cannot be built as a feature extractor: {e}") from e
    fi = body.feature_info
    info = [FeatureInfo(c, r, m) for c, r, m in zip(fi.channels(), fi.reduction(), fi.module_name())]
    return body, info
