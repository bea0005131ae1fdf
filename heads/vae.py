"""Variational autoencoder: the encoder's deepest feature → (mu, log-variance) → reparameterised z → image decoder.

Same value ranges as :mod:`heads.autoencoder` (normalised input; reconstruction, target and metrics in [0, 1]).
The decoder defines the likelihood p(x | z): ``bernoulli`` (BCE on [0, 1] pixels) or ``gaussian`` (fixed ``sigma``).

Head outputs (a dict of tensors): ``recon``, ``logits``, ``input`` as for the autoencoder, plus ``mu`` and
``logvar`` ``[N, latent]``; the likelihood's name and ``sigma`` are attributes of the head, which the loss and the
metrics read. Training decodes a sampled z (the reparameterisation's noise, like dropout, is the one use of
``self.training``); evaluation decodes ``z = mu`` (so metrics are repeatable: ``elbo`` is the bound's one-point
estimate at the posterior mean).

``zoo sample`` draws from the prior (:func:`sample`) and interpolates between two images' codes
(:func:`interpolate`); both live here, next to the head whose latent space they use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from heads.autoencoder import (ImageDecoder, ReconstructionMetrics, average_reconstructions, check_geometry,
                               decoder_plan, draw_reconstruction, export_reconstruction, predict_reconstructions,
                               RECONSTRUCTION_LEGEND, judge_reconstruction, save_reconstructions, to_uint8,
                               unflip_images)
from zoo.backbones.base import FeatureInfo
from zoo.errors import ZooError
from zoo.recipe.spec import Range, spec
from zoo.task import ImageGeometry, Task

__all__ = ["VaeHead", "Vae", "VaeLoss", "VaeMetrics", "VAE", "kl_divergence", "reconstruction_nll",
           "classifier_probabilities", "sample", "interpolate"]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL( N(mu, exp(logvar)) || N(0, I) ) per sample, in nats: ``[N, latent]`` → ``[N]``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def reconstruction_nll(outputs: dict[str, Any], targets: torch.Tensor, *, likelihood: str = "bernoulli",
                       sigma: float = 0.1) -> torch.Tensor:
    """-log p(x | z) per image in nats, summed over pixels: ``[N]``. Targets ``[N, C, H, W]`` in [0, 1]."""
    if likelihood == "bernoulli":
        per_pixel = F.binary_cross_entropy_with_logits(outputs["logits"].float(), targets, reduction="none")
    else:
        per_pixel = 0.5 * ((targets - outputs["recon"].float()) / sigma) ** 2 + math.log(sigma * math.sqrt(2 * math.pi))
    return per_pixel.flatten(1).sum(dim=1)


class VaeHead(nn.Module):
    """Encoder feature → average-pooled to at most 4x4 → linear → (mu, logvar); z → linear → :class:`ImageDecoder`.

    Args:
        in_channels: channels of the deepest feature map. geometry: the data's image side, channels, normalisation.
        grid, stages: from :func:`heads.autoencoder.decoder_plan`. width: decoder start channels.
        latent: dimensions of z. likelihood: "bernoulli" or "gaussian". sigma: the Gaussian's standard deviation.
    """

    def __init__(self, *, in_channels: int, geometry: ImageGeometry, grid: int, stages: int, width: int, latent: int,
                 likelihood: str, sigma: float) -> None:
        super().__init__()
        self.geometry, self.grid, self.width, self.latent = geometry, grid, width, latent
        self.likelihood, self.sigma = likelihood, sigma
        self.pooled = min(grid, 4)
        self.to_posterior = nn.Linear(in_channels * self.pooled ** 2, 2 * latent)
        self.from_latent = nn.Sequential(nn.Linear(latent, width * grid * grid), nn.ReLU(inplace=True))
        self.decoder = ImageDecoder(width=width, stages=stages, out_channels=geometry.channels, size=geometry.size)

    def posterior(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone features → ``mu, logvar`` ``[N, latent]`` of q(z | x)."""
        pooled = F.adaptive_avg_pool2d(features[-1], self.pooled).flatten(1)
        mu, logvar = self.to_posterior(pooled).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)  # keeps exp(logvar) finite early in training

    def logits(self, z: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """``z [N, latent]`` → logits ``[N, C, H, W]`` (the image is their sigmoid)."""
        grid = self.from_latent(z).reshape(-1, self.width, self.grid, self.grid)
        return self.decoder(grid, size)

    def encode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Backbone features → the posterior means ``[N, latent]`` (the codes ``zoo sample --interpolate`` mixes)."""
        return self.posterior(features)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z [N, latent]`` → images ``[N, C, H, W]`` in [0, 1]."""
        return torch.sigmoid(self.logits(z))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images ``[n, C, H, W]`` in [0, 1] decoded from z ~ N(0, I) (drawn on the CPU from ``generator``,
        so a seed gives the same samples on any device)."""
        z = torch.randn(n, self.latent, generator=generator).to(self.to_posterior.weight.device)
        return self.decode(z)

    def forward(self, features: list[torch.Tensor], images: torch.Tensor, target: Any = None
                ) -> dict[str, torch.Tensor]:
        mu, logvar = self.posterior(features)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        logits = self.logits(z, tuple(images.shape[-2:]))
        return {"recon": torch.sigmoid(logits), "logits": logits, "input": self.geometry.unnormalise(images),
                "mu": mu, "logvar": logvar}


class VaeMetrics(nn.Module):
    """``elbo`` (nats per image), ``elbo_per_pixel`` (per pixel and channel), ``kl`` (nats per image), and the
    reconstruction metrics ``mse``, ``psnr``, ``ssim`` of :class:`heads.autoencoder.ReconstructionMetrics`."""

    def __init__(self, *, likelihood: str = "bernoulli", sigma: float = 0.1) -> None:
        super().__init__()
        self.likelihood, self.sigma = likelihood, sigma
        self.reconstruction = ReconstructionMetrics()
        self.elbo, self.kl = MeanMetric(), MeanMetric()
        self.pixels = 1

    def update(self, outputs: dict[str, Any], targets: torch.Tensor) -> None:
        self.reconstruction.update(outputs, targets)
        kl = kl_divergence(outputs["mu"].float(), outputs["logvar"].float())
        self.elbo.update(-(reconstruction_nll(outputs, targets, likelihood=self.likelihood, sigma=self.sigma) + kl))
        self.kl.update(kl)
        self.pixels = targets[0].numel()

    def compute(self) -> dict[str, float]:
        elbo = self.elbo.compute().item()
        return {"elbo": elbo, "elbo_per_pixel": elbo / self.pixels, "kl": self.kl.compute().item(),
                **self.reconstruction.compute()}

    def reset(self) -> None:
        for m in (self.reconstruction, self.elbo, self.kl):
            m.reset()

    def save_artifacts(self, out_dir: Path) -> list[Path]:
        return []


VAE = Task(name="vae", target="image", monitor="elbo", mode="max", metrics=("elbo", "elbo_per_pixel", "mse", "psnr"),
           make_metrics=lambda head: VaeMetrics(likelihood=head.module.likelihood, sigma=head.module.sigma),
           predict=predict_reconstructions, draw=draw_reconstruction, save_predictions=save_reconstructions,
           export=export_reconstruction, combine=average_reconstructions,
           unflip=unflip_images, judge=judge_reconstruction, shown=("elbo", "psnr"), legend=RECONSTRUCTION_LEGEND)


@spec
class Vae:
    latent: Annotated[int, Range(ge=1)] = 16  # dimensions of z
    width: Annotated[int, Range(ge=8)] | None = None  # decoder start channels; None: the deepest feature's channels
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"  # p(x | z) of [0, 1] pixels
    sigma: Annotated[float, Range(gt=0)] = 0.1  # gaussian: standard deviation of p(x | z)

    num_classes: ClassVar[None] = None  # a VAE has no classes
    task: ClassVar[Task] = VAE

    def build(self, feature_info: Sequence[FeatureInfo], *, num_classes: int, geometry: ImageGeometry) -> VaeHead:
        check_geometry(geometry, "VAE")
        grid, stages = decoder_plan(feature_info, geometry.size)
        return VaeHead(in_channels=feature_info[-1].channels, geometry=geometry, grid=grid, stages=stages,
                       width=self.width or feature_info[-1].channels, latent=self.latent,
                       likelihood=self.likelihood, sigma=self.sigma)


class _VaeLoss(nn.Module):
    """Negative ELBO per pixel: ``nll`` (reconstruction) and ``kl`` (weighted by beta, warmed up)."""

    def __init__(self, beta: float, warmup: float, *, likelihood: str, sigma: float) -> None:
        super().__init__()
        self.beta, self.warmup = beta, warmup
        self.likelihood, self.sigma = likelihood, sigma
        self.progress = 1.0

    def set_progress(self, fraction: float) -> None:
        self.progress = fraction

    @property
    def kl_weight(self) -> float:
        """``beta``, scaled linearly from 0 over the first ``warmup`` fraction of training."""
        if self.warmup <= 0:
            return self.beta
        return self.beta * min(1.0, self.progress / self.warmup)

    def forward(self, outputs: dict[str, Any], targets: torch.Tensor) -> dict[str, torch.Tensor]:
        pixels = targets[0].numel()
        nll = reconstruction_nll(outputs, targets, likelihood=self.likelihood, sigma=self.sigma).mean() / pixels
        kl = kl_divergence(outputs["mu"].float(), outputs["logvar"].float()).mean() / pixels
        return {"nll": nll, "kl": self.kl_weight * kl}


@spec
class VaeLoss:
    beta: Annotated[float, Range(ge=0)] = 1.0  # weight of the KL term (1: the ELBO; >1: beta-VAE)
    warmup: Annotated[float, Range(ge=0, le=1)] = 0.0  # fraction of training over which beta rises from 0

    task: ClassVar[Task] = VAE

    def build(self, head: VaeHead) -> nn.Module:
        return _VaeLoss(self.beta, self.warmup, likelihood=head.likelihood, sigma=head.sigma)


@torch.no_grad()
def classifier_probabilities(images: torch.Tensor, classifier: nn.Module, data: Any) -> torch.Tensor:
    """A trained classifier's class probabilities for images: how much generated images look like its classes.

    Args:
        images: ``[N, C, H, W]`` in [0, 1] (e.g. :meth:`VaeHead.sample`).
        classifier: a classification model mapping normalised images to logits ``[N, classes]``
            (``load_module(ckpt).model``).
        data: the classifier's data spec: the images are resized to its ``image_size``, given its ``channels``
            (grey replicated, or colour averaged) and normalised with its ``mean``/``std``.

    Returns:
        ``[N, classes]`` softmax probabilities.
    """
    device = next(classifier.parameters()).device
    x = images.float().to(device)
    if x.shape[1] != data.channels:
        x = x.mean(dim=1, keepdim=True).expand(-1, data.channels, -1, -1)
    if tuple(x.shape[-2:]) != (data.image_size, data.image_size):
        x = F.interpolate(x, size=(data.image_size, data.image_size), mode="bilinear", align_corners=False)
    mean = torch.tensor(data.mean, device=device).reshape(1, -1, 1, 1)
    std = torch.tensor(data.std, device=device).reshape(1, -1, 1, 1)
    return classifier((x - mean) / std).softmax(dim=1)


# ---- zoo sample: the prior and the latent line between two images --------------------------------------------------

def _vae_module(checkpoint: str | Path) -> tuple[Any, VaeHead]:
    """The checkpoint's module and its VAE head (the single head, or the one named head that is a VAE)."""
    from zoo.engine import load_module

    module = load_module(checkpoint)
    found = [m for m in module.model.named_heads().values() if isinstance(m, VaeHead)]
    if len(found) != 1:
        kinds = sorted({type(ctx.spec).task.name for ctx in module.contexts.values()})
        raise ZooError(f"{checkpoint}: its head(s) are {', '.join(kinds)}; zoo sample needs exactly one VAE head "
                       f"(heads.Vae), whose latent space it samples")
    module.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    return module, found[0]


def _save_grid(pictures: Sequence[Any], out: str | Path, columns: int) -> Path:
    from PIL import Image

    from zoo.engine.run import picture_grid

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture_grid(list(pictures), columns=columns, gap=2)).save(out)
    return out


@torch.no_grad()
def sample(checkpoint: str | Path, *, n: int = 64, out: str | Path, seed: int = 0) -> Path:
    """Draws ``n`` images from the VAE's prior into one grid PNG at ``out``; the same ``seed``, the same picture."""
    if n < 1:
        raise ZooError(f"--n must be at least 1, got {n}")
    _, head = _vae_module(checkpoint)
    images = head.sample(n, torch.Generator().manual_seed(seed))
    return _save_grid(to_uint8(images), out, columns=int(math.ceil(math.sqrt(n))))


@torch.no_grad()
def interpolate(checkpoint: str | Path, first: str | Path, second: str | Path, *, steps: int = 8,
                out: str | Path) -> Path:
    """A picture of the straight line between two images' latent codes: ``first | decoded steps | second``."""
    from zoo.data.images import load_image
    from zoo.engine.run import to_uint8_images

    if steps < 2:
        raise ZooError(f"--steps must be at least 2, got {steps}")
    module, head = _vae_module(checkpoint)
    recipe = module.recipe
    transform = recipe.transform(train=False, with_targets=False)
    files = [Path(first), Path(second)]
    for f in files:
        if not f.is_file():
            raise ZooError(f"{f}: no such image file (--interpolate takes two image files)")
    batch = torch.stack([transform(image=load_image(f, channels=recipe.data.channels))["image"] for f in files])
    codes = head.encode(module.model.features(batch.to(module.device)))  # [2, D]
    t = torch.linspace(0, 1, steps, device=codes.device)[:, None]
    images = head.decode(codes[0] * (1 - t) + codes[1] * t)  # [steps, C, H, W]
    ends = to_uint8_images(batch, recipe.data.mean, recipe.data.std)
    row = [ends[0], *to_uint8(images), ends[1]]
    return _save_grid(row, out, columns=len(row))
