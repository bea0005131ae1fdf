"""Pictures of what a ConvNet computes: filters, activations, saliency, guided backprop, Grad-CAM, top-k images.

:func:`visualize` loads a subject (a zoo checkpoint, or a backbone registry name for ``filters`` and
``activations`` only) and writes the pictures ``zoo viz`` asks for; each ``write_*`` function renders one PNG and
returns its path. The numbers behind the pictures come from functions that return arrays
(:func:`layer_activations`, :func:`saliency_map`, :func:`guided_backprop`, :func:`grad_cam`,
:func:`top_activating`), so they can be checked without looking at pixels. What each picture shows, with the
papers' definitions: docs/viz.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ZooError

log = logging.getLogger(__name__)

__all__ = ["PICTURES", "Subject", "load_subject", "prepare_image", "first_conv", "layer_activations",
           "saliency_map", "guided_backprop", "grad_cam", "gradcam_level", "top_activating", "write_filters",
           "write_activations", "write_saliency", "write_guided", "write_gradcam", "write_topk", "visualize"]

PICTURES = ("filters", "activations", "saliency", "guided", "gradcam", "topk")
_BACKBONE_PICTURES = ("filters", "activations")  # all a bare backbone (no head, no data) can show
_PER_IMAGE = ("activations", "saliency", "guided", "gradcam")  # the pictures of one image
_EXPLAINING = ("saliency", "guided", "gradcam")  # pictures of a class score: heads whose task has Task.explain
# Activations whose output has the sign of their input: the guided rule can read "input > 0" from the output,
# which in-place modules leave as the only record.
_SIGN_PRESERVING = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                    nn.Mish, nn.Tanh, nn.Hardswish, nn.Softsign)
_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout2d)  # their maps repeat the previous panel in evaluation
_MAX_TILED_CHANNELS = 64  # channels shown per activation panel


@dataclass
class Subject:
    """What is being visualised.

    Attributes:
        name: the checkpoint path or backbone name, for titles.
        backbone: ``forward(x [N, C, H, W]) -> list of [N, C_i, H_i, W_i]`` with ``feature_info``.
        model: backbone then head (``forward(x) -> logits [N, K]``), or ``None`` for a bare backbone.
        input_shape: ``(C, H, W)`` the model is fed.
        mean, std: the normalisation images get (0..1 scale, one value or one per channel).
        transform: albumentations pipeline, ``uint8 [H, W, C] -> float [C, H, W]``.
        recipe, classes: the checkpoint's (the explained head's classes), or ``None``.
        head: the explained head's module (``head(features, x) -> outputs``); ``explain``: its task's
            ``Task.explain`` (``None``: the task has no class score to explain, so saliency, guided backprop and
            Grad-CAM do not apply); ``head_name``: its recipe name ("" for a single head).
    """

    name: str
    backbone: nn.Module
    model: nn.Module | None
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    transform: Any
    recipe: Any = None
    classes: list[str] | None = None
    head: nn.Module | None = None
    explain: Any = None
    head_name: str = ""

    def outputs(self, x: torch.Tensor) -> Any:
        """The explained head's outputs for the normalised input ``x``."""
        return self.head(self.model.features(x), x, None)

    def require_explainable(self, what: str) -> None:
        self.require_checkpoint(what)
        if self.explain is None:
            task = type(self.recipe.model.named_heads()[self.head_name]).task.name
            raise ZooError(f"--what {what}: {self.name}'s {task} head has no class score to explain; pictures for it: "
                           f"{', '.join(p for p in PICTURES if p not in _EXPLAINING)}")

    def require_checkpoint(self, what: str) -> None:
        if self.model is None:
            raise ZooError(f"--what {what} needs a trained checkpoint (a head and its data set); {self.name!r} is a "
                           f"backbone name, for which only {', '.join(_BACKBONE_PICTURES)} apply")

    def class_index(self, wanted: str | int | None, logits: torch.Tensor) -> int:
        """``wanted`` as a class name or index; ``None``: the predicted class."""
        assert self.classes is not None
        if wanted is None:
            return int(logits.argmax())
        if str(wanted) in self.classes:
            return self.classes.index(str(wanted))
        if isinstance(wanted, int) or str(wanted).lstrip("-").isdigit():
            if 0 <= int(wanted) < len(self.classes):
                return int(wanted)
        raise ZooError(f"--class {wanted!r}: not a class of {self.name}; valid: names {self.classes[:20]}"
                       f"{' ...' if len(self.classes) > 20 else ''} or indices 0..{len(self.classes) - 1}")

    def level(self, layer: int) -> int:
        """A feature level index (negative counts from the deepest), checked against ``feature_info``."""
        info = self.backbone.feature_info
        if not -len(info) <= layer < len(info):
            levels = ", ".join(f"{i}: {f.module} ({f.channels} ch, stride {f.stride})" for i, f in enumerate(info))
            raise ZooError(f"--layer {layer}: {self.name} has {len(info)} feature levels, valid -{len(info)}.."
                           f"{len(info) - 1} ({levels})")
        return layer % len(info)


def _is_checkpoint(target: str) -> bool:
    return target.endswith(".ckpt") or Path(target).expanduser().is_file()


def load_subject(target: str | Path, *, pretrained: bool | str = False, head: str | None = None) -> Subject:
    """A zoo checkpoint (model, recipe, classes) or a backbone registry name (``pretrained`` weights or none).

    ``head``: which named head of a multi-head checkpoint to explain (default: the first whose task has a class
    score).

    Raises:
        ZooError: a missing checkpoint, an unknown name (with close matches), ``pretrained`` with a checkpoint.
    """
    from zoo.recipe import Augment

    target = str(target)
    if _is_checkpoint(target):
        from zoo.engine import load_module

        if pretrained:
            raise ZooError(f"--pretrained applies to backbone names; checkpoint {target} carries its own weights")
        if not Path(target).expanduser().is_file():
            raise ZooError(f"checkpoint {target} does not exist")
        module = load_module(target)
        recipe, d = module.recipe, module.recipe.data
        contexts = module.contexts
        if head is not None and head not in contexts:
            raise ZooError(f"--head {head!r}: {target} has heads {sorted(n for n in contexts if n) or ['(one)']}")
        name = head if head is not None else next(
            (n for n, c in contexts.items() if type(c.spec).task.explain is not None), next(iter(contexts)))
        ctx = contexts[name]
        return Subject(name=target, backbone=module.model.backbone, model=module.model.eval(),
                       input_shape=(d.channels, d.image_size, d.image_size), mean=d.mean, std=d.std,
                       transform=recipe.transform(train=False, with_targets=False), recipe=recipe,
                       classes=list(ctx.classes), head=ctx.module, explain=type(ctx.spec).task.explain,
                       head_name=name)
    from zoo.backbones import create_backbone, default_input

    shape = default_input(target)
    backbone = create_backbone(target, pretrained=pretrained, in_chans=shape[0]).eval()
    mean, std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if shape[0] == 3 else ((0.5,), (0.5,))
    return Subject(name=target, backbone=backbone, model=None, input_shape=shape, mean=mean, std=std,
                   transform=Augment().compose(train=False, size=shape[1], mean=mean, std=std))


def prepare_image(subject: Subject, image: str | Path | None = None) -> tuple[torch.Tensor, str]:
    """``(x [1, C, H, W] normalised, description)`` for an image file, or a checkpoint's first test image.

    Raises:
        ZooError: no image for a backbone name, or an undecodable file (named).
    """
    from zoo.data.images import load_image

    if image is not None:
        pixels, what = load_image(image, channels=subject.input_shape[0]), str(image)
    elif subject.recipe is not None:
        from zoo.engine.run import prepare_data

        splits = prepare_data(subject.recipe)
        if len(splits.test) == 0:
            raise ZooError(f"{subject.name}: its test split is empty; pass --image FILE")
        pixels, targets = splits.test.load(0)
        label = targets.get("label")
        what = f"test image 0 (label {splits.classes['label'][label]})" if label is not None else "test image 0"
    else:
        raise ZooError(f"{subject.name!r} is a backbone name: pass --image FILE (only a checkpoint has a test split "
                       f"to take an image from)")
    return subject.transform(image=pixels)["image"][None].float(), what


def _display(subject: Subject, x: torch.Tensor) -> np.ndarray:
    """Normalised ``[C, H, W]`` → what the net saw, ``[H, W]`` grey or ``[H, W, 3]`` RGB in 0..1."""
    mean = torch.tensor(subject.mean).view(-1, 1, 1)
    std = torch.tensor(subject.std).view(-1, 1, 1)
    pic = (x.detach().cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    return pic[..., 0] if pic.shape[2] == 1 else pic


# ---- the numbers ----

def first_conv(module: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first ``nn.Conv2d`` in module order, with its dotted name."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise ZooError(f"{type(module).__name__} has no nn.Conv2d layer whose filters could be shown")


def layer_activations(backbone: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """``(module name, output [C, H, W])`` of every leaf module whose output is a 4-D map, in call order.

    Identity and dropout modules are left out (in evaluation they repeat their input).
    """
    seen: list[tuple[str, torch.Tensor]] = []

    def hook(name: str):
        def record(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                seen.append((name.removeprefix("body."), output[0].detach().clone()))  # clone: in-place ops follow
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in backbone.named_modules()
               if n and not any(True for _ in m.children()) and not isinstance(m, _PASS_THROUGH)]
    try:
        with torch.no_grad():
            backbone(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _class_score(subject: Subject, outputs: Any, wanted: str | int | None) -> tuple[torch.Tensor, int]:
    """The task's score of the wanted (default: the best predicted) class in the first image, and its index:
    a classifier's logit, a segmenter's logits summed over the class's predicted pixels, a detector's best box
    score of the class (the targets pytorch-grad-cam uses for these tasks)."""
    k = None if wanted is None else subject.class_index(wanted, None)
    score, k, _ = subject.explain(outputs, k)
    return score, k


def saliency_map(subject: Subject, x: torch.Tensor, wanted: str | int | None = None) -> tuple[np.ndarray, int]:
    """Simonyan et al.'s saliency ``[H, W]`` (``max_c |d score / d x|``) and the class index it is for."""
    subject.require_explainable("saliency")
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        score, k = _class_score(subject, subject.outputs(x), wanted)
        (grad,) = torch.autograd.grad(score, x)
    return grad[0].abs().amax(0).numpy(), k


class _PositiveGrad(torch.autograd.Function):
    """Identity forward; backward keeps the gradient only where it is positive and the activation was positive."""

    @staticmethod
    def forward(ctx: Any, output: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(output > 0)
        return output.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (positive,) = ctx.saved_tensors
        return grad.clamp(min=0) * positive


def guided_backprop(subject: Subject, x: torch.Tensor, wanted: str | int | None = None) -> tuple[np.ndarray, int]:
    """Guided-backpropagation gradient ``[H, W, C]`` of the class score w.r.t. the input, and the class index.

    Raises:
        ZooError: the model has no activation modules (activations applied as functions cannot be hooked).
    """
    subject.require_explainable("guided")
    acts = [m for m in subject.model.modules() if isinstance(m, _SIGN_PRESERVING)]
    if not acts:
        raise ZooError(f"{subject.name}: guided backpropagation needs activation modules (nn.ReLU, nn.Tanh, ...); "
                       f"this model applies its activations as functions")
    handles = [m.register_forward_hook(lambda m, a, out: _PositiveGrad.apply(out)) for m in acts]
    try:
        x = x.clone().requires_grad_(True)
        with torch.enable_grad():
            score, k = _class_score(subject, subject.outputs(x), wanted)
            (grad,) = torch.autograd.grad(score, x)
    finally:
        for h in handles:
            h.remove()
    return grad[0].permute(1, 2, 0).numpy(), k


def gradcam_level(subject: Subject, x: torch.Tensor) -> int:
    """The deepest feature level whose map is larger than 1x1 for this input (the deepest when none is)."""
    with torch.no_grad():
        feats = subject.backbone(x)
    return max((i for i, f in enumerate(feats) if f.shape[-2] * f.shape[-1] > 1), default=len(feats) - 1)


def grad_cam(subject: Subject, x: torch.Tensor, wanted: str | int | None = None, *,
             layer: int | None = None) -> tuple[np.ndarray, int, int]:
    """Grad-CAM ``[H, W]`` in 0..1 at the input's size, the class index and the feature level it was taken on.

    ``layer``: a feature level (``None``: :func:`gradcam_level`). All zeros when no channel of the map argues
    for the class (every weighted sum negative), as the ReLU of the method prescribes.
    """
    subject.require_explainable("gradcam")
    with torch.enable_grad():
        feats = subject.backbone(x)
        neck = getattr(subject.model, "neck", None)
        score, k = _class_score(subject, subject.head(neck(feats) if neck is not None else feats, x, None), wanted)
        grads = torch.autograd.grad(score, feats, allow_unused=True)
    read = [i for i, g in enumerate(grads) if g is not None]  # the levels the head's score depends on
    if layer is None:
        level = gradcam_level(subject, x)
        if level not in read:  # a head that reads a shallower map (YOLO v1's grid): the deepest one it reads
            larger = [i for i in read if feats[i].shape[-2] * feats[i].shape[-1] > 1]
            level = max(larger or read)
    else:
        level = subject.level(layer)
        if level not in read:
            raise ZooError(f"--layer {layer}: the {subject.name} head's score does not depend on feature level "
                           f"{level}; it reads levels {read}")
    grad = grads[level]
    cam = F.relu((grad.mean((2, 3), keepdim=True) * feats[level]).sum(1, keepdim=True)).detach()  # [1, 1, h, w]
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    top = cam.max()
    return (cam / top if top > 0 else cam).numpy(), k, level


def top_activating(subject: Subject, *, layer: int = -1, unit: int = 0, k: int = 9,
                   split: str = "val") -> list[tuple[int, float, torch.Tensor, Any]]:
    """The ``k`` images of a split with the highest mean activation of channel ``unit`` at feature level ``layer``.

    Returns ``(index in the split, mean activation, image [C, H, W] normalised, target)``, highest first.
    """
    subject.require_checkpoint("topk")
    from zoo.engine.datamodule import ZooDataModule
    from zoo.engine.run import prepare_data

    if split not in ("val", "test"):
        raise ZooError(f"--split {split!r}: choose 'val' or 'test'")
    if k < 1:
        raise ZooError(f"--top-k {k}: must be at least 1")
    level = subject.level(layer)
    channels = subject.backbone.feature_info[level].channels
    if not 0 <= unit < channels:
        raise ZooError(f"--unit {unit}: feature level {level} has {channels} channels, valid 0..{channels - 1}")
    loader = ZooDataModule(subject.recipe, prepare_data(subject.recipe)).split_loader(split)
    # A running top-k, so that only k images are held whatever the split's size.
    best_scores, best_index = torch.empty(0), torch.empty(0, dtype=torch.long)
    best_images, best_targets, seen = torch.empty(0), [], 0
    with torch.no_grad():
        for x, y in loader:
            labels = y.get("label")  # class-labelled data shows each image's class in the picture
            targets = [None] * len(x)
            if labels is not None:
                for i, v in zip(labels.index.tolist(), labels.value.tolist()):
                    targets[i] = v
            scores = torch.cat([best_scores, subject.backbone(x)[level][:, unit].float().mean((1, 2))])
            index = torch.cat([best_index, torch.arange(seen, seen + len(x))])
            images, pool = torch.cat([best_images, x]) if len(best_images) else x, best_targets + targets
            keep = scores.topk(min(k, len(scores))).indices
            best_scores, best_index, best_images = scores[keep], index[keep], images[keep]
            best_targets, seen = [pool[i] for i in keep.tolist()], seen + len(x)
    return [(int(i), float(s), im, t) for i, s, im, t in zip(best_index, best_scores, best_images, best_targets)]


# ---- the pictures ----

def _tile(maps: np.ndarray, cols: int | None = None) -> np.ndarray:
    """``[N, H, W]`` or ``[N, H, W, 3]`` → one mosaic with a one-pixel NaN border between tiles."""
    n, h, w = maps.shape[:3]
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, *maps.shape[3:]), np.nan, dtype=np.float32)
    for i, m in enumerate(maps):
        r, c = divmod(i, cols)
        out[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = m
    return out


def _scaled(a: np.ndarray, axes: tuple[int, ...] | None = None) -> np.ndarray:
    lo, hi = np.nanmin(a, axis=axes, keepdims=True), np.nanmax(a, axis=axes, keepdims=True)
    return (a - lo) / np.where(hi > lo, hi - lo, 1)


def _save(fig: Any, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fig.savefig(path, dpi=100)
    return path


def _figure(rows: int, cols: int, *, size: float = 2.6) -> tuple[Any, np.ndarray]:
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    fig = Figure(figsize=(size * cols, size * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    for ax in axes:
        ax.set_axis_off()
    return fig, axes


def _show(ax: Any, pic: np.ndarray, title: str, **kwargs: Any) -> None:
    import matplotlib

    cmap = matplotlib.colormaps[kwargs.pop("cmap", "gray")].with_extremes(bad="#404040")
    ax.imshow(pic, cmap=cmap if pic.ndim == 2 else None, interpolation="nearest", **kwargs)
    ax.set_title(title, fontsize=8)


def write_filters(subject: Subject, out: Path) -> Path:
    """``filters.png``: the first convolution's kernels, each scaled to its own range."""
    name, conv = first_conv(subject.backbone)
    w = conv.weight.detach().float().cpu().numpy()  # [out, in / groups, kh, kw]
    pics = w.transpose(0, 2, 3, 1) if w.shape[1] == 3 else w.mean(1)
    fig, (ax,) = _figure(1, 1, size=min(10.0, 2.0 + 0.35 * math.sqrt(len(w)) * w.shape[-1] / 3))
    _show(ax, _tile(_scaled(pics, tuple(range(1, pics.ndim)))),
          f"{subject.name}: {name}, {w.shape[0]} filters {w.shape[2]}x{w.shape[3]}"
          + ("" if w.shape[1] in (1, 3) else f" (mean of {w.shape[1]} input channels)"))
    return _save(fig, out, "filters.png")


def write_activations(subject: Subject, x: torch.Tensor, out: Path, *, image_name: str = "") -> Path:
    """``activations.png``: the input, every layer's maps (channels tiled), and the class probabilities."""
    layers = layer_activations(subject.backbone, x)
    panels = 1 + len(layers) + (subject.model is not None)
    cols = math.ceil(math.sqrt(panels))
    fig, axes = _figure(math.ceil(panels / cols), cols, size=2.2)
    _show(axes[0], _display(subject, x[0]), f"input {image_name}"[:40])
    for ax, (name, a) in zip(axes[1:], layers):
        shown = a[:_MAX_TILED_CHANNELS].float().cpu().numpy()
        count = f"{len(shown)} of {a.shape[0]}" if len(shown) < a.shape[0] else f"{a.shape[0]}"
        _show(ax, _scaled(_tile(shown)), f"{name}\n{count} ch {a.shape[1]}x{a.shape[2]}")
    logits = None
    if subject.model is not None:
        with torch.no_grad():
            logits = subject.outputs(x)
    if isinstance(logits, torch.Tensor) and logits.dim() == 2:  # a classifier's class probabilities
        probs = logits[0].softmax(0).numpy()
        ax = axes[panels - 1]
        ax.set_axis_on()
        top = np.argsort(probs)[::-1][:10]
        ax.barh(range(len(top))[::-1], probs[top])
        ax.set_yticks(range(len(top))[::-1], [subject.classes[i] for i in top], fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_title("class probabilities", fontsize=8)
    return _save(fig, out, "activations.png")


def _class_title(subject: Subject, k: int, x: torch.Tensor) -> str:
    with torch.no_grad():
        _, _, p = subject.explain(subject.outputs(x), k)
    return f"class {subject.classes[k]!r} (p={p:.2f})"


def write_saliency(subject: Subject, x: torch.Tensor, out: Path, *, wanted: str | int | None = None) -> Path:
    """``saliency_<class>.png``: the image and its input-gradient saliency for the class."""
    sal, k = saliency_map(subject, x, wanted)
    fig, axes = _figure(1, 2)
    _show(axes[0], _display(subject, x[0]), "input")
    _show(axes[1], sal, f"saliency, {_class_title(subject, k, x)}", cmap="hot")
    return _save(fig, out, f"saliency_{k}.png")


def write_guided(subject: Subject, x: torch.Tensor, out: Path, *, wanted: str | int | None = None) -> Path:
    """``guided_<class>.png``: the image and its guided-backpropagation gradient for the class."""
    g, k = guided_backprop(subject, x, wanted)
    pic = np.clip(0.5 + 0.15 * (g - g.mean()) / (g.std() + 1e-12), 0, 1)  # the usual display of a gradient
    fig, axes = _figure(1, 2)
    _show(axes[0], _display(subject, x[0]), "input")
    _show(axes[1], pic[..., 0] if pic.shape[2] == 1 else pic, f"guided backprop, {_class_title(subject, k, x)}")
    return _save(fig, out, f"guided_{k}.png")


def write_gradcam(subject: Subject, x: torch.Tensor, out: Path, *, wanted: str | int | None = None,
                  layer: int | None = None) -> Path:
    """``gradcam_<class>.png``: the image, the Grad-CAM map, and the map over the image."""
    cam, k, level = grad_cam(subject, x, wanted, layer=layer)
    info = subject.backbone.feature_info[level]
    fig, axes = _figure(1, 3)
    image = _display(subject, x[0])
    _show(axes[0], image, "input")
    _show(axes[1], cam, f"Grad-CAM on level {level} ({info.module})", cmap="jet", vmin=0, vmax=1)
    _show(axes[2], image, _class_title(subject, k, x))
    axes[2].imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
    return _save(fig, out, f"gradcam_{k}.png")


def write_topk(subject: Subject, out: Path, *, layer: int = -1, unit: int = 0, k: int = 9,
               split: str = "val") -> Path:
    """``topk_l<level>_u<unit>.png``: the split's images that most activate one channel, highest first."""
    hits = top_activating(subject, layer=layer, unit=unit, k=k, split=split)
    level = subject.level(layer)
    cols = math.ceil(math.sqrt(len(hits)))
    fig, axes = _figure(math.ceil(len(hits) / cols), cols, size=1.8)
    for ax, (i, score, image, target) in zip(axes, hits):
        label = subject.classes[target] if isinstance(target, int) else ""
        _show(ax, _display(subject, image), f"{split}[{i}] {label!s:.12}\nmean act {score:.3g}")
    fig.suptitle(f"top {len(hits)}: level {level} ({subject.backbone.feature_info[level].module}) unit {unit}",
                 fontsize=9)
    return _save(fig, out, f"topk_l{level}_u{unit}.png")


def visualize(target: str | Path, what: str | Sequence[str] = "all", *, image: str | Path | None = None,
              out: str | Path | None = None, wanted: str | int | None = None, unit: int = 0,
              layer: int | None = None, top_k: int = 9, split: str = "val",
              pretrained: bool | str = False, head: str | None = None) -> list[Path]:
    """Writes the pictures ``what`` (names from :data:`PICTURES`, or ``"all"``) and returns their paths.

    Args:
        target: a zoo checkpoint or a backbone registry name.
        what: one picture name, several, or ``"all"`` (for a backbone name: ``filters`` and ``activations``).
        image: the image for the per-image pictures (default for a checkpoint: its first test image).
        out: folder (default: ``viz/`` next to a checkpoint; ``runs/viz/<name>`` for a backbone name).
        wanted: class name or index for saliency, guided and Grad-CAM (default: the predicted class).
        unit, layer: channel and feature level for ``topk`` (layer default: the deepest) and the level of
            ``gradcam`` (default: the deepest map larger than 1x1).
        top_k, split: images shown by ``topk`` and the split they come from (``val`` or ``test``).
        pretrained: for a backbone name, the weights (as ``model.backbone.pretrained``).
        head: the named head of a multi-head checkpoint to explain (default: the first with a class score).

    Raises:
        ZooError: an unknown picture, target, class, unit or level (the message lists the valid ones), or a
            picture a bare backbone cannot make.
    """
    names = [what] if isinstance(what, str) else list(what)
    for n in names:
        if n not in (*PICTURES, "all"):
            raise ZooError(f"--what {n!r}: unknown picture; valid: {', '.join(PICTURES)}, all")
    subject = load_subject(target, pretrained=pretrained, head=head)
    if "all" in names:
        names = list(PICTURES if subject.model is not None else _BACKBONE_PICTURES)
        if subject.model is not None and subject.explain is None:
            log.warning("%s: its head has no class score to explain; leaving out %s", subject.name,
                        ", ".join(_EXPLAINING))
            names = [n for n in names if n not in _EXPLAINING]
    for n in names:
        if n not in _BACKBONE_PICTURES:
            subject.require_checkpoint(n)
    out = Path(out) if out else (Path(target).parent / "viz" if subject.model is not None
                                 else Path("runs/viz") / str(target).replace("/", "_"))
    x = image_name = None
    if any(n in _PER_IMAGE for n in names):
        x, image_name = prepare_image(subject, image)
    writers = {
        "filters": lambda: write_filters(subject, out),
        "activations": lambda: write_activations(subject, x, out, image_name=image_name),
        "saliency": lambda: write_saliency(subject, x, out, wanted=wanted),
        "guided": lambda: write_guided(subject, x, out, wanted=wanted),
        "gradcam": lambda: write_gradcam(subject, x, out, wanted=wanted, layer=layer),
        "topk": lambda: write_topk(subject, out, layer=-1 if layer is None else layer, unit=unit, k=top_k,
                                   split=split),
    }
    return [writers[n]() for n in names]
