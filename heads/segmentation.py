"""Semantic segmentation: FCN and U-Net decoders, cross-entropy / Dice losses, mIoU metrics, mask predictions.

Outputs are logits ``[N, K, H, W]`` at the input resolution (a head whose backbone's strides do not divide the
input exactly is resized to the target by the loss, the metrics and ``predict``); targets are class indices
``[N, H, W]`` (int64) with :data:`~zoo.data.segmentation.IGNORE_INDEX` for pixels that count nowhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as coco_mask
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from heads.classification import average_probabilities
from zoo.backbones.base import FeatureInfo
from zoo.data.segmentation import IGNORE_INDEX
from zoo.draw import BLACK, as_rgb, overlay_mask, palette, text_below, upscale
from zoo.recipe.spec import Range, spec
from zoo.task import Geometry, HeadContext, ImageGeometry, Task

__all__ = ["FCN", "FCNHead", "UNet", "UNetDecoder", "SegmentationLoss", "SegmentationMetrics", "SEGMENTATION",
           "decode_mask", "predict_masks", "fit_logits"]


# ---- building blocks ----------------------------------------------------------------------------------------------

def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 conv → BatchNorm → ReLU layers (the U-Net block)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True))


def _deconv(channels: int, factor: int) -> nn.Module:
    """A transposed convolution that upsamples exactly ``factor`` times, initialised to bilinear interpolation.

    Kernel ``2f - f % 2`` with padding ``(f - f % 2) / 2`` maps ``n`` cells to ``n * f`` for any integer ``f``.
    """
    if factor == 1:
        return nn.Identity()
    kernel, padding = 2 * factor - factor % 2, (factor - factor % 2) // 2
    layer = nn.ConvTranspose2d(channels, channels, kernel, stride=factor, padding=padding, bias=False)
    centre = (kernel - 1) / 2
    ramp = 1 - torch.abs(torch.arange(kernel, dtype=torch.float32) - centre) / factor
    with torch.no_grad():
        layer.weight.zero_()
        for c in range(channels):  # each channel upsamples itself (FCN's fixed-bilinear start, then learnt)
            layer.weight[c, c] = ramp[:, None] * ramp[None, :]
    return layer


def fit_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``logits [N, K, h, w]`` resized (bilinear) to ``size = (H, W)`` when they differ."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


# ---- heads --------------------------------------------------------------------------------------------------------

class FCNHead(nn.Module):
    """FCN (Long et al. 2015): class scores on the deepest maps, fused upward by transposed convolutions.

    ``levels=1`` is FCN-32s (one deconvolution from the deepest map to the input), ``levels=3`` FCN-8s (scores of
    the two shallower levels are added after each 2x deconvolution, then one deconvolution to the input).

    Args:
        feature_info: the backbone's levels; the last ``levels`` are used.
        num_classes: output channels K.
        levels: how many of the deepest levels are fused.
        hidden: channels of a 3x3 conv block on the deepest map before its scores (0: none).
        dropout: dropout before the deepest scores.
    """

    def __init__(self, *, feature_info: Sequence[FeatureInfo], num_classes: int, levels: int = 3, hidden: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        used = list(feature_info)[-levels:]
        self.first = len(feature_info) - len(used)
        deepest = used[-1].channels
        layers: list[nn.Module] = []
        if hidden:
            layers += [nn.Conv2d(deepest, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU(inplace=True)]
            deepest = hidden
        self.deep = nn.Sequential(*layers, nn.Dropout2d(dropout), nn.Conv2d(deepest, num_classes, 1))
        self.scores = nn.ModuleList(nn.Conv2d(f.channels, num_classes, 1) for f in used[:-1])
        # deconvolution i takes the running scores from level i+1's stride to level i's stride.
        self.ups = nn.ModuleList(_deconv(num_classes, max(1, round(used[i + 1].stride / used[i].stride)))
                                 for i in range(len(used) - 1))
        self.final = _deconv(num_classes, used[0].stride)

    def forward(self, features: list[torch.Tensor], images: torch.Tensor | None = None, target: Any = None
                ) -> torch.Tensor:
        used = features[self.first:]
        x = self.deep(used[-1])
        for i in reversed(range(len(used) - 1)):
            skip = self.scores[i](used[i])
            x = fit_logits(self.ups[i](x), skip.shape[-2:]) + skip
        return self.final(x)  # [N, K, H, W]


class UNetDecoder(nn.Module):
    """A U-Net decoder over a backbone's levels: upsample, concatenate the skip, conv block; deepest first.

    When the shallowest level is coarser than the input, a last stage upsamples to full resolution (without a
    skip). Stage widths are ``width`` at the shallowest level, doubling per level deeper up to ``8 * width``.

    Args:
        feature_info: the backbone's levels (all are used).
        num_classes: output channels K.
        width: channels of the shallowest decoder stage.
    """

    def __init__(self, *, feature_info: Sequence[FeatureInfo], num_classes: int, width: int = 32) -> None:
        super().__init__()
        info = list(feature_info)
        widths = [width * 2 ** min(i, 3) for i in range(len(info))]
        self.center = _conv_block(info[-1].channels, widths[-1])
        self.stages = nn.ModuleList(_conv_block(widths[i + 1] + info[i].channels, widths[i])
                                    for i in range(len(info) - 1))
        self.final_factor = info[0].stride
        self.final = _conv_block(widths[0], widths[0]) if self.final_factor > 1 else nn.Identity()
        self.classify = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, features: list[torch.Tensor], images: torch.Tensor | None = None, target: Any = None
                ) -> torch.Tensor:
        x = self.center(features[-1])
        for i in reversed(range(len(features) - 1)):
            skip = features[i]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.stages[i](torch.cat([x, skip], dim=1))
        if self.final_factor > 1:
            x = F.interpolate(x, scale_factor=self.final_factor, mode="bilinear", align_corners=False)
            x = self.final(x)
        return self.classify(x)  # [N, K, H, W]


# ---- loss ---------------------------------------------------------------------------------------------------------

def soft_dice_loss(logits: torch.Tensor, targets: torch.Tensor, *, smooth: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the soft Dice of ``softmax(logits)`` and one-hot ``targets``, ignore pixels excluded.

    Sums run over the whole batch (``[N, H, W]``); ``smooth`` keeps classes absent from both near a Dice of 1.
    """
    probs = logits.float().softmax(dim=1)  # [N, K, H, W]
    valid = targets != IGNORE_INDEX  # [N, H, W]
    onehot = F.one_hot(torch.where(valid, targets, 0), logits.shape[1]).permute(0, 3, 1, 2).float()
    weight = valid[:, None].float()
    inter = (probs * onehot * weight).sum(dim=(0, 2, 3))
    total = (probs * weight).sum(dim=(0, 2, 3)) + (onehot * weight).sum(dim=(0, 2, 3))
    return 1 - ((2 * inter + smooth) / (total + smooth)).mean()


class _SegmentationLoss(nn.Module):
    def __init__(self, ce_weight: float, dice_weight: float, smooth: float, label_smoothing: float) -> None:
        super().__init__()
        self.ce_weight, self.dice_weight, self.smooth = ce_weight, dice_weight, smooth
        self.label_smoothing = label_smoothing

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = fit_logits(outputs, targets.shape[-2:])
        terms = {}
        if self.ce_weight:
            # mean over non-ignored pixels; an all-ignore batch gives NaN in torch, so guard it to 0
            if (targets != IGNORE_INDEX).any():
                ce = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX,
                                     label_smoothing=self.label_smoothing)
            else:
                ce = logits.sum() * 0.0
            terms["ce"] = self.ce_weight * ce
        if self.dice_weight:
            terms["dice"] = self.dice_weight * soft_dice_loss(logits, targets, smooth=self.smooth)
        return terms


# ---- metrics ------------------------------------------------------------------------------------------------------

class SegmentationMetrics(nn.Module):
    """``miou``, ``iou/<class>`` and ``pixel_acc`` from one pixel confusion matrix (ignore pixels excluded).

    A class absent from both truth and prediction over the whole split has no IoU: it is left out of ``miou``
    and its ``iou/<class>`` is not reported.
    """

    def __init__(self, classes: Sequence[str]) -> None:
        super().__init__()
        self.classes = list(classes)
        self.confusion = MulticlassConfusionMatrix(num_classes=len(self.classes), ignore_index=IGNORE_INDEX)
        self._last_iou: dict[str, float] = {}

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        predictions = fit_logits(outputs, targets.shape[-2:]).argmax(dim=1)
        self.confusion.update(predictions, targets)

    def compute(self) -> dict[str, float]:
        cm = self.confusion.compute().double()  # [true, predicted]
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        present = union > 0
        iou = tp / union.clamp(min=1)
        result = {"miou": iou[present].mean().item() if present.any() else 0.0,
                  "pixel_acc": (tp.sum() / cm.sum().clamp(min=1)).item()}
        self._last_iou = {name: v for name, v, p in zip(self.classes, iou.tolist(), present.tolist()) if p}
        result.update({f"iou/{name}": v for name, v in self._last_iou.items()})
        return result

    def reset(self) -> None:
        self.confusion.reset()

    def save_artifacts(self, out_dir: Path) -> list[Path]:
        if not self._last_iou:
            return []
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names, values = list(self._last_iou), list(self._last_iou.values())
        colours = palette(len(self.classes))[[self.classes.index(n) for n in names]] / 255
        fig, ax = plt.subplots(figsize=(2 + 0.4 * len(names), 3))
        ax.bar(range(len(names)), values, color=np.where(colours.sum(1, keepdims=True) == 0, 0.5, colours))
        ax.set(xticks=range(len(names)), ylim=(0, 1), ylabel="IoU",
               title=f"per-class IoU (mIoU {np.mean(values):.3f})")
        ax.set_xticklabels(names, rotation=90)
        fig.tight_layout()
        path = Path(out_dir) / "iou_per_class.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return [path]


# ---- predictions and pictures -------------------------------------------------------------------------------------

def _undo_fit(logits: torch.Tensor, input_size: Sequence[int], original: Sequence[int], resize: str) -> torch.Tensor:
    """Logits ``[K, S, S]`` of one model input back on the original image's ``(H, W)`` grid."""
    if resize == "letterbox":  # LongestMaxSize then centred PadIfNeeded (Augment.compose)
        side = input_size[0]
        scale = side / max(original)
        h, w = (max(1, round(original[0] * scale)), max(1, round(original[1] * scale)))
        top, left = (side - h) // 2, (side - w) // 2
        logits = logits[:, top:top + h, left:left + w]
    return fit_logits(logits[None], original)[0]


def _encode(mask: np.ndarray, classes: Sequence[str]) -> dict:
    """A class-index mask as ``{"size": [H, W], "class_share": {...}, "rle": {class: COCO RLE}}``."""
    counts = np.bincount(mask.ravel(), minlength=len(classes))
    rle = {}
    for index in np.flatnonzero(counts[1:]) + 1:  # class 0 is what no RLE covers
        encoded = coco_mask.encode(np.asfortranarray(mask == index, dtype=np.uint8))
        rle[classes[index]] = {"size": list(encoded["size"]), "counts": encoded["counts"].decode("ascii")}
    return {"size": list(mask.shape), "class_share": {classes[i]: round(float(c) / mask.size, 6)
                                                      for i, c in enumerate(counts) if c},
            "rle": rle}


def decode_mask(prediction: dict, classes: Sequence[str]) -> np.ndarray:
    """The ``uint8 [H, W]`` class-index mask of one prediction from :func:`predict_masks` (0 where no RLE is)."""
    mask = np.zeros(prediction["size"], np.uint8)
    for name, rle in prediction["rle"].items():
        bits = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
        mask[bits.astype(bool)] = classes.index(name)
    return mask


def predict_masks(outputs: torch.Tensor, head: HeadContext, geometry: Geometry) -> list[dict]:
    """Logits ``[N, K, h, w]`` → per image its mask as COCO RLE per class and each class's pixel share.

    With ``geometry.image_sizes`` the mask is on the original image (letterbox padding cut away, logits resized
    bilinearly before the argmax); otherwise on the model input (``geometry.input_size``).
    """
    classes = head.classes
    results = []
    for i, logits in enumerate(outputs.float()):
        if geometry.image_sizes is not None:
            logits = _undo_fit(logits, geometry.input_size, geometry.image_sizes[i], geometry.resize)
        else:
            logits = fit_logits(logits[None], geometry.input_size)[0]
        results.append(_encode(logits.argmax(dim=0).byte().numpy(), classes))
    return results


def export_masks(outputs: torch.Tensor, head: HeadContext, geometry: Geometry) -> dict[str, torch.Tensor]:
    """``probs [N, K, H, W]`` (softmax of the logits resized to the model input) and ``mask [N, H, W]`` (argmax,
    int64), in model-input pixels."""
    probs = fit_logits(outputs.float(), geometry.input_size).softmax(dim=1)
    return {"probs": probs, "mask": probs.argmax(dim=1)}


def draw_masks(image: np.ndarray, prediction: dict, target: Any, classes: Sequence[str]) -> np.ndarray:
    """image | truth overlay | prediction overlay (no truth panel without ``target``), with a colour legend."""
    colours = palette(len(classes))
    predicted = decode_mask(prediction, classes)
    panels = [as_rgb(image)]
    if target is not None:
        truth = np.asarray(target, dtype=np.int64)
        panels.append(overlay_mask(image, truth, colours, ignore_index=IGNORE_INDEX))
    panels.append(overlay_mask(image, predicted, colours))
    gap = np.full((image.shape[0], 2, 3), 255, np.uint8)
    row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    picture, _ = upscale(row, min_side=96)
    header = "image | truth | prediction" if target is not None else "image | prediction"
    shown = [i for i in np.unique(predicted).tolist() if i != 0]
    lines = [header, *(classes[i] for i in shown)] if shown else [header, f"all {classes[0]}"]
    line_colours = [BLACK, *(tuple(int(v * 0.8) for v in colours[i]) for i in shown)] if shown else [BLACK, BLACK]
    return text_below(picture, lines, line_colours)


def judge_masks(prediction: dict, target: Any, classes: Sequence[str]) -> tuple[str, float, str]:
    """1 - the image's mean IoU over the classes in its truth or prediction (ignored pixels left out)."""
    predicted = decode_mask(prediction, classes).astype(np.int64)
    truth = np.asarray(target, dtype=np.int64)
    valid = truth != IGNORE_INDEX
    ious = []
    for k in np.union1d(np.unique(truth[valid]), np.unique(predicted[valid])):
        p, t = (predicted == k) & valid, truth == k
        ious.append((p & t).sum() / max((p | t).sum(), 1))
    miou = float(np.mean(ious)) if ious else 1.0
    return "lowest IoU", 1 - miou, f"image mIoU {miou:.2f}"


def save_masks(results: list[dict], classes: Sequence[str], out_dir: Path) -> list[Path]:
    """``out_dir/masks/<index>_<stem>.png``: each prediction as a palette PNG whose pixel values are class indices."""
    folder = Path(out_dir) / "masks"
    folder.mkdir(parents=True, exist_ok=True)
    flat_palette = palette(256).ravel().tolist()
    written = []
    for i, result in enumerate(results):
        picture = Image.fromarray(decode_mask(result, classes))
        picture.putpalette(flat_palette)  # mode L → P: the values stay class indices, viewers show colours
        path = folder / f"{i:05d}_{Path(result.get('image', 'image')).stem}.png"
        picture.save(path)
        written.append(path)
    return written


def explain_mask(outputs: torch.Tensor, k: int | None) -> tuple[torch.Tensor, int, float]:
    """pytorch-grad-cam's ``SemanticSegmentationTarget``: the first image's class-``k`` logits summed over the pixels
    predicted as ``k`` (default: the predicted non-background class covering most pixels, else background); the
    probability is the class's mean softmax over those pixels."""
    logits = outputs[0]  # [K, h, w]
    predicted = logits.detach().argmax(0)
    if k is None:
        counts = torch.bincount(predicted.flatten(), minlength=logits.shape[0])
        k = int(counts[1:].argmax()) + 1 if counts[1:].sum() > 0 else 0
    where = (predicted == k).to(logits.dtype)
    p = float((logits.detach().float().softmax(0)[k] * where).sum() / where.sum().clamp(min=1))
    return (logits[k] * where).sum(), k, p


SEGMENTATION = Task(name="segmentation", target="mask", monitor="miou", mode="max", metrics=("miou", "pixel_acc"),
                    per_class="iou", make_metrics=lambda head: SegmentationMetrics(head.classes),
                    predict=predict_masks, explain=explain_mask, draw=draw_masks, save_predictions=save_masks,
                    export=export_masks, combine=average_probabilities,
                    unflip=lambda logits, width: logits.flip(-1),
                    judge=judge_masks, shown=("miou",),
                    legend="image | truth | prediction, classes in their colours; the classes predicted are listed beneath")


# ---- specs --------------------------------------------------------------------------------------------------------

@spec
class FCN:
    num_classes: Annotated[int, Range(ge=2)] | None = None  # None: the dataset's class count
    levels: Annotated[int, Range(ge=1)] = 3  # deepest backbone levels fused: 1 = FCN-32s, 3 = FCN-8s
    hidden: Annotated[int, Range(ge=0)] = 256  # 3x3 conv channels on the deepest map before scoring (0: none)
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.1  # dropout before the deepest scores

    task: ClassVar[Task] = SEGMENTATION

    def build(self, feature_info: Sequence[FeatureInfo], *, num_classes: int,
              geometry: ImageGeometry | None = None) -> FCNHead:
        return FCNHead(feature_info=feature_info, num_classes=num_classes, levels=min(self.levels, len(feature_info)),
                       hidden=self.hidden, dropout=self.dropout)


@spec
class UNet:
    num_classes: Annotated[int, Range(ge=2)] | None = None  # None: the dataset's class count
    width: Annotated[int, Range(ge=1)] = 32  # channels of the shallowest decoder stage (x2 per level, up to x8)

    task: ClassVar[Task] = SEGMENTATION

    def build(self, feature_info: Sequence[FeatureInfo], *, num_classes: int,
              geometry: ImageGeometry | None = None) -> UNetDecoder:
        return UNetDecoder(feature_info=feature_info, num_classes=num_classes, width=self.width)


@spec
class SegmentationLoss:
    name: Literal["ce", "dice", "ce+dice"] = "ce"  # per-pixel cross-entropy, soft Dice, or their weighted sum
    ce_weight: Annotated[float, Range(gt=0)] = 1.0  # weight of the cross-entropy term (in "ce" and "ce+dice")
    dice_weight: Annotated[float, Range(gt=0)] = 1.0  # weight of the Dice term (in "dice" and "ce+dice")
    smooth: Annotated[float, Range(ge=0)] = 1.0  # Dice smoothing added to numerator and denominator
    label_smoothing: Annotated[float, Range(ge=0, lt=1)] = 0.0  # cross-entropy label smoothing

    task: ClassVar[Task] = SEGMENTATION

    def build(self, head: nn.Module | None = None) -> nn.Module:
        return _SegmentationLoss(ce_weight=self.ce_weight if "ce" in self.name.split("+") else 0.0,
                                 dice_weight=self.dice_weight if "dice" in self.name else 0.0,
                                 smooth=self.smooth, label_smoothing=self.label_smoothing)
