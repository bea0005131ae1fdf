"""Autoencoders: a convolutional decoder that mirrors the encoder from its deepest feature map back to the image.

Value ranges (one convention for the whole task family, VAEs included): the model INPUT is the normalised image
(``data.mean``/``data.std``); the reconstruction, the target and every metric are in PIXEL units ``[0, 1]``. The
decoder ends in a sigmoid, the target is the clean image the pipeline saw before any ``aug.input_only`` noise
(``"pixels"`` of :class:`zoo.recipe.parts.SamplePipeline`), so losses and metrics need no normalisation constants.

Head outputs (a dict): ``recon [N, C, H, W]`` in [0, 1], ``logits`` (before the sigmoid), ``input [N, C, H, W]``
(the model input mapped back to [0, 1]: what ``zoo predict`` measures its error against).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchmetrics import MeanSquaredError
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from zoo.backbones.base import FeatureInfo
from zoo.draw import BLACK, as_rgb, text_below, upscale
from zoo.errors import RecipeError
from zoo.recipe.spec import Range, spec
from zoo.task import Geometry, HeadContext, ImageGeometry, Task

__all__ = ["ImageGeometry", "ImageDecoder", "AutoencoderHead", "Autoencoder", "ReconstructionLoss",
           "ReconstructionMetrics", "AUTOENCODING", "predict_reconstructions",
           "draw_reconstruction", "save_reconstructions", "export_reconstruction", "decode_png", "to_uint8"]


def decoder_plan(feature_info: Sequence[FeatureInfo], size: int) -> tuple[int, int]:
    """``(start grid side, upsampling stages)``: the deepest level's stride, mirrored back to ``size`` pixels.

    Each stage doubles the side; ``stages = round(log2(stride))`` of the deepest level, the grid the rest.
    """
    stages = max(0, round(math.log2(max(1, feature_info[-1].stride))))
    while stages and size // 2 ** stages < 1:
        stages -= 1
    return max(1, size // 2 ** stages), stages


class ImageDecoder(nn.Module):
    """``[N, width, g, g]`` → ``stages`` x (transposed conv 4x4 stride 2, BN, ReLU, conv 3x3, BN, ReLU) → logits.

    Channels halve at each stage (not below ``min_width``); a 3x3 convolution makes ``out_channels`` logits, resized
    bilinearly to ``size`` when ``g * 2**stages`` differs from it.

    Args:
        width: channels of the start grid. stages: doublings of the side. out_channels: image channels.
        size: output side in pixels. min_width: narrowest stage.
    """

    def __init__(self, *, width: int, stages: int, out_channels: int, size: int, min_width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = width
        for _ in range(stages):
            nxt = max(min_width, c // 2)
            layers += [nn.ConvTranspose2d(c, nxt, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(nxt),
                       nn.ReLU(inplace=True), nn.Conv2d(nxt, nxt, 3, padding=1, bias=False), nn.BatchNorm2d(nxt),
                       nn.ReLU(inplace=True)]
            c = nxt
        self.stages = nn.Sequential(*layers)
        self.to_image = nn.Conv2d(c, out_channels, 3, padding=1)
        self.size = size

    def forward(self, grid: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        logits = self.to_image(self.stages(grid))  # [N, C, g * 2**stages, ...]
        size = size or (self.size, self.size)
        if tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits


class AutoencoderHead(nn.Module):
    """Deepest feature map → (optional vector bottleneck) → :class:`ImageDecoder` → reconstruction in [0, 1].

    Args:
        in_channels: channels of the deepest feature map (``feature_info[-1].channels``).
        geometry: the data's image side, channels and normalisation.
        grid, stages: from :func:`decoder_plan`.
        width: channels of the decoder's start grid.
        bottleneck: ``None``: the feature map, resampled to ``grid x grid``, is the code; an int: it is average-pooled
            to at most 4x4, flattened and projected to this many units (the code), then to the start grid.
    """

    def __init__(self, *, in_channels: int, geometry: ImageGeometry, grid: int, stages: int, width: int,
                 bottleneck: int | None) -> None:
        super().__init__()
        self.geometry, self.grid, self.width = geometry, grid, width
        self.pooled = min(grid, 4)
        if bottleneck is None:
            self.entry: nn.Module = nn.Sequential(nn.Conv2d(in_channels, width, 1, bias=False), nn.BatchNorm2d(width),
                                                  nn.ReLU(inplace=True))
        else:
            self.entry = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * self.pooled ** 2, bottleneck),
                                       nn.ReLU(inplace=True), nn.Linear(bottleneck, width * grid * grid),
                                       nn.ReLU(inplace=True))
        self.bottleneck = bottleneck
        self.decoder = ImageDecoder(width=width, stages=stages, out_channels=geometry.channels, size=geometry.size)

    def forward(self, features: list[torch.Tensor], images: torch.Tensor, target: Any = None
                ) -> dict[str, torch.Tensor]:
        deepest = features[-1]  # [N, C, h, w]
        if self.bottleneck is None:
            grid = self.entry(F.adaptive_avg_pool2d(deepest, self.grid))
        else:
            code = F.adaptive_avg_pool2d(deepest, self.pooled)
            grid = self.entry(code).reshape(-1, self.width, self.grid, self.grid)
        logits = self.decoder(grid, tuple(images.shape[-2:]))
        return {"recon": torch.sigmoid(logits), "logits": logits, "input": self.geometry.unnormalise(images)}


# ---- metrics ------------------------------------------------------------------------------------------------------

class ReconstructionMetrics(nn.Module):
    """``mse``, ``psnr`` (dB, mean over images) and ``ssim`` of reconstructions against targets, both in [0, 1]."""

    def __init__(self, classes: Sequence[str] = ()) -> None:
        super().__init__()
        self.mse = MeanSquaredError()
        self.psnr = PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0)

    def update(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> None:
        recon = outputs["recon"].float()
        self.mse.update(recon.flatten(), targets.flatten())
        self.psnr.update(recon, targets)
        if min(recon.shape[-2:]) >= 11:  # SSIM's 11x11 Gaussian window
            self.ssim.update(recon, targets)

    def compute(self) -> dict[str, float]:
        result = {"mse": self.mse.compute().item(), "psnr": self.psnr.compute().item()}
        if self.ssim.update_count:
            result["ssim"] = self.ssim.compute().item()
        return result

    def reset(self) -> None:
        for m in (self.mse, self.psnr, self.ssim):
            m.reset()

    def save_artifacts(self, out_dir: Path) -> list[Path]:
        return []  # the reconstruction grid (predictions_<split>.png) is drawn by the engine through ``draw``


# ---- samples, predictions, pictures -------------------------------------------------------------------------------

def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[N, C, H, W]`` in [0, 1] → ``uint8 [N, H, W, C]``."""
    return (images.detach().float().cpu().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def encode_png(image: np.ndarray) -> str:
    """``uint8 [H, W, C]`` → base64 PNG text (so a reconstruction fits in ``predictions.json``)."""
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_png(text: str) -> np.ndarray:
    """The inverse of :func:`encode_png`: ``uint8 [H, W]`` (grey) or ``[H, W, 3]``."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


def predict_reconstructions(outputs: dict[str, torch.Tensor], head: HeadContext, geometry: Geometry) -> list[dict]:
    """Per image: ``mse`` and ``psnr`` (dB) of the reconstruction against the model input (both in [0, 1], at the
    model's input size) and the reconstruction as a base64 PNG (``reconstruction_png``)."""
    recon, inputs = outputs["recon"].float(), outputs["input"].float()
    mse = ((recon - inputs) ** 2).flatten(1).mean(dim=1)
    psnr = 10 * torch.log10(1.0 / mse.clamp_min(1e-10))
    return [{"mse": round(m, 6), "psnr": round(p, 3), "reconstruction_png": encode_png(picture)}
            for m, p, picture in zip(mse.tolist(), psnr.tolist(), to_uint8(recon))]


def export_reconstruction(outputs: dict[str, torch.Tensor], head: HeadContext, geometry: Geometry
                          ) -> dict[str, torch.Tensor]:
    """``reconstruction [N, C, H, W]`` in [0, 1] at the model's input size (a VAE's: decoded from the posterior
    mean, as in evaluation)."""
    return {"reconstruction": outputs["recon"].float()}


def average_reconstructions(outputs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Several models' outputs averaged key by key (the reconstruction; a VAE's posterior too)."""
    return {key: torch.stack([o[key].float() for o in outputs]).mean(dim=0) for key in outputs[0]}


def unflip_images(outputs: dict[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    """Image outputs ``[N, C, H, W]`` of a flipped input flipped back (latent vectors stay as they are)."""
    return {key: value.flip(-1) if value.ndim == 4 else value for key, value in outputs.items()}


def draw_reconstruction(image: np.ndarray, prediction: dict, target: Any, classes: Sequence[str]) -> np.ndarray:
    """clean input | noisy input | reconstruction, with the reconstruction's PSNR against the clean image beneath
    (given a target whose image differs from the input); otherwise input | reconstruction, PSNR against the input."""
    recon = as_rgb(decode_png(prediction["reconstruction_png"]))
    shown = as_rgb(image)
    if shown.shape[:2] != recon.shape[:2]:  # zoo predict draws on the original image
        shown = np.asarray(Image.fromarray(shown).resize(recon.shape[1::-1], Image.BILINEAR))
    panels, header = [shown, recon], "input | reconstruction"
    score = f"psnr {prediction['psnr']:.1f} dB vs input"
    if target is not None:
        clean = to_uint8(torch.as_tensor(target)[None])[0]
        if np.abs(clean.astype(int) - image.astype(int)).max() > 1:
            panels, header = [as_rgb(clean), shown, recon], "clean | noisy input | reconstruction"
            error = decode_png(prediction["reconstruction_png"]).reshape(clean.shape) / 255.0 - clean / 255.0
            mse = float(np.mean(error ** 2))
            score = f"psnr {10 * math.log10(1 / max(mse, 1e-10)):.1f} dB vs clean"
    gap = np.full((recon.shape[0], 2, 3), 255, np.uint8)
    row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    picture, _ = upscale(row, min_side=96)
    return text_below(picture, [header, score], [BLACK, BLACK])


def judge_reconstruction(prediction: dict, target: Any, classes: Sequence[str]) -> tuple[str, float, str]:
    """The reconstruction's error against the model input."""
    return "worst reconstructions", prediction["mse"], f"PSNR {prediction['psnr']:.1f} dB vs input"


RECONSTRUCTION_LEGEND = ("input | reconstruction (clean | noisy input | reconstruction when denoising), PSNR beneath")


def save_reconstructions(results: list[dict], classes: Sequence[str], out_dir: Path) -> list[Path]:
    """``out_dir/reconstructions/<index>_<stem>.png``: each reconstruction at the model's input size."""
    folder = Path(out_dir) / "reconstructions"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, result in enumerate(results):
        path = folder / f"{i:05d}_{Path(result.get('image', 'image')).stem}.png"
        Image.fromarray(decode_png(result["reconstruction_png"])).save(path)
        written.append(path)
    return written


AUTOENCODING = Task(name="autoencoding", target="image", monitor="psnr", mode="max", metrics=("mse", "psnr"),
                    make_metrics=lambda head: ReconstructionMetrics(), predict=predict_reconstructions,
                    draw=draw_reconstruction, save_predictions=save_reconstructions, export=export_reconstruction,
                    combine=average_reconstructions, unflip=unflip_images, judge=judge_reconstruction,
                    shown=("psnr",), legend=RECONSTRUCTION_LEGEND)


# ---- specs --------------------------------------------------------------------------------------------------------

def check_geometry(geometry: ImageGeometry, role: str) -> ImageGeometry:
    if geometry.size < 8:
        raise RecipeError("data.image_size", f"is {geometry.size}; the {role} decoder needs at least 8 pixels")
    return geometry


@spec
class Autoencoder:
    width: Annotated[int, Range(ge=8)] | None = None  # decoder start channels; None: the deepest feature's channels
    bottleneck: Annotated[int, Range(ge=1)] | None = None  # None: convolutional code; int: a vector code this wide
    num_classes: ClassVar[None] = None  # autoencoders have no classes
    task: ClassVar[Task] = AUTOENCODING

    def build(self, feature_info: Sequence[FeatureInfo], *, num_classes: int,
              geometry: ImageGeometry) -> AutoencoderHead:
        check_geometry(geometry, "autoencoder")
        grid, stages = decoder_plan(feature_info, geometry.size)
        return AutoencoderHead(in_channels=feature_info[-1].channels, geometry=geometry, grid=grid, stages=stages,
                               width=self.width or feature_info[-1].channels, bottleneck=self.bottleneck)


class _ReconstructionLoss(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.name == "l2":
            return {"l2": F.mse_loss(outputs["recon"], targets)}
        if self.name == "l1":
            return {"l1": F.l1_loss(outputs["recon"], targets)}
        return {"bce": F.binary_cross_entropy_with_logits(outputs["logits"], targets)}


@spec
class ReconstructionLoss:
    name: Literal["l2", "l1", "bce"] = "l2"  # per-pixel mean: squared error, absolute error, or Bernoulli BCE

    task: ClassVar[Task] = AUTOENCODING

    def build(self, head: nn.Module | None = None) -> nn.Module:
        return _ReconstructionLoss(self.name)
