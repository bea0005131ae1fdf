"""torchvision's classification models as backbones, cut at their stage outputs.

torchvision models don't describe their feature maps, so the stages are found by probing: forward hooks
record every module's output at two input sizes, the exact stride of each map is the input growth over
the map growth, and the last module of each stride becomes a return node of
``torchvision.models.feature_extraction.create_feature_extractor`` (which drops the classifier, so every
kept parameter takes part in the forward pass).
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from zoo.backbones.base import FeatureInfo
from zoo.errors import ZooError
from zoo.weights import load_state_dict_report

__all__ = ["torchvision_names", "reject_token_models", "create_torchvision_features", "adapt_input_conv"]

# Top-level children from which on a torchvision classifier is head, not body.
_HEAD_CHILDREN = {"avgpool", "classifier", "fc", "head", "heads", "dropout", "aux1", "aux2", "AuxLogits"}
# Token-sequence models: their maps are channels-last or flattened, which the probe can't cut.
_UNSUPPORTED = ("vit_", "swin_", "maxvit_")
_PROBE_SIZES = (224, 288)  # differ by 64, a multiple of every stride up to 64


def torchvision_names() -> list[str]:
    """Names of torchvision's classification models that work as backbones here."""
    names = torchvision.models.list_models(module=torchvision.models)
    return [n for n in names if not n.startswith(_UNSUPPORTED)]


def reject_token_models(name: str) -> None:
    """Raises a ZooError that points to timm if ``name`` is one of torchvision's token-sequence models."""
    if name.startswith(_UNSUPPORTED) and name in torchvision.models.list_models(module=torchvision.models):
        raise ZooError(
            f"torchvision/{name} returns token sequences, not feature maps; use timm's version of the "
            f"architecture (see `zoo backbones {name.split('_')[0]}`), which supports features_only"
        )


def _probe(model: nn.Module, body: list[str], size: int) -> list[tuple[str, int, int, int]]:
    """Runs one forward; returns ``(module name, depth, channels, height)`` of every 4-D output, in call order."""
    seen: list[tuple[str, int, int, int]] = []
    hooks = []
    for name, module in model.named_modules():
        if name and name.split(".")[0] in body:

            def hook(_m, _i, out, name=name):
                if torch.is_tensor(out) and out.ndim == 4:
                    seen.append((name, name.count(".") + 1, out.shape[1], out.shape[2]))

            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    return seen


def _stage_outputs(model: nn.Module) -> list[FeatureInfo]:
    body = []
    for name, _ in model.named_children():
        if name in _HEAD_CHILDREN:
            break
        body.append(name)
    model.eval()
    small, large = (_probe(model, body, s) for s in _PROBE_SIZES)
    grow = _PROBE_SIZES[1] - _PROBE_SIZES[0]
    levels: list[tuple[str, int, int, int]] = []  # (name, depth, channels, stride)
    for (name, depth, ch, h0), (_, _, _, h1) in zip(small, large):
        if h1 > h0 and grow % (h1 - h0) == 0:
            levels.append((name, depth, ch, grow // (h1 - h0)))
    # Shallowest cut that still shows every stride: stage containers, not the layers inside them.
    all_strides = {lv[3] for lv in levels}
    for max_depth in range(1, 8):
        kept = [lv for lv in levels if lv[1] <= max_depth]
        if {lv[3] for lv in kept} == all_strides:
            break
    last: dict[int, tuple[str, int]] = {}
    for name, _, ch, stride in kept:
        last[stride] = (name, ch)
    return [FeatureInfo(ch, stride, name) for stride, (name, ch) in sorted(last.items())]


def adapt_input_conv(model: nn.Module, in_chans: int) -> None:
    """Replaces the first convolution so that it takes ``in_chans`` channels.

    Pretrained RGB filters are summed to one grey channel, or tiled and rescaled for other counts, the way
    timm adapts its own first layers.
    """
    for parent in model.modules():
        for child_name, conv in parent.named_children():
            if isinstance(conv, nn.Conv2d):
                if conv.in_channels == in_chans:
                    return
                new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
                with torch.no_grad():
                    w = conv.weight
                    if in_chans == 1:
                        new.weight.copy_(w.sum(dim=1, keepdim=True))
                    else:
                        reps = -(-in_chans // w.shape[1])
                        new.weight.copy_(w.repeat(1, reps, 1, 1)[:, :in_chans] * (w.shape[1] / in_chans))
                    if conv.bias is not None:
                        new.bias.copy_(conv.bias)
                setattr(parent, child_name, new)
                return


def create_torchvision_features(
    name: str, *, in_chans: int = 3, state: dict[str, torch.Tensor] | None = None, what: str = ""
) -> tuple[nn.Module, list[FeatureInfo]]:
    """Builds ``name`` and cuts it into a feature extractor.

    Args:
        state: a torchvision-format state dict loaded into the whole classifier before it is cut (with a
            report; classifier tensors are dropped with the classifier), then adapted to ``in_chans``.
        what: how to name ``state`` in the load report.

    Returns:
        ``(body, feature_info)``: ``body(x)`` returns a dict of ``[N, C_i, H_i, W_i]`` maps in stride order.
    """
    reject_token_models(name)
    kwargs = {}
    if name in ("googlenet", "inception_v3"):
        # Their published weights expect transform_input (torchvision's builder turns it on with weights); it
        # is on whenever the input is RGB so that a checkpoint behaves the same however it was started.
        kwargs = {"aux_logits": False, "init_weights": True, "transform_input": in_chans == 3}
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    if state is not None:
        load_state_dict_report(model, state, what=what or f"weights into torchvision/{name}")
    info = _stage_outputs(model)
    if not info:
        raise ZooError(f"torchvision/{name}: no feature maps were found by probing")
    body = create_feature_extractor(model, return_nodes={f.module: f.module for f in info})
    if in_chans != 3:
        adapt_input_conv(body, in_chans)
    body.train()
    return body, info
