"""Autoencoders and the VAE: the KL term, the likelihoods, input-only noise with clean targets, decoders on several
backbones, metrics, and the engine end to end (train, eval, predict, ``zoo sample`` and its interpolation)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image

from heads import Autoencoder, ReconstructionLoss, Vae, VaeLoss
from heads.autoencoder import ImageGeometry, ReconstructionMetrics
from heads.vae import classifier_probabilities, kl_divergence, reconstruction_nll, sample
from zoo.cli import main
from zoo.data import DigitsData
from zoo.data.targets import SamplePreparer
from zoo.engine import evaluate, load_module, predict, train
from zoo.errors import ZooError
from zoo.recipe import Augment, BackboneSpec, Recipe, Trainer

TINY = Trainer(max_epochs=1, accelerator="cpu", devices=1, limit_train_batches=2, limit_val_batches=1,
               limit_test_batches=2)


def _recipe(head, loss, *, backbone: str = "lenet5", size: int = 32, aug: Augment = Augment()) -> Recipe:
    return Recipe(name="tiny_ae", data=DigitsData(batch_size=16, image_size=size),
                  model=BackboneSpec(name=backbone, in_chans=1) | head, loss=loss, aug=aug, trainer=TINY)


def _built(recipe: Recipe):
    from zoo.engine.module import ZooModel

    return ZooModel(recipe, {"label": tuple(str(d) for d in range(10))})  # the digits' 10 classes


# ---- the VAE's terms ----------------------------------------------------------------------------------------------

def test_kl_equals_the_closed_form():
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [0.0, 0.0]])
    # 0.5 * sum(mu^2 + var - 1 - log var): (1 + 1 - 1 - 0) / 2 + (0 + 4 - 1 - log 4) / 2; a standard normal gives 0
    expected = torch.tensor([0.5 + 0.5 * (3 - math.log(4.0)), 0.0])
    assert torch.allclose(kl_divergence(mu, logvar), expected)
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    reference = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * logvar).exp()),
                                                  torch.distributions.Normal(0.0, 1.0)).sum(dim=1)
    assert torch.allclose(kl_divergence(mu, logvar), reference, atol=1e-5)


def test_likelihoods_equal_torch_distributions():
    targets = torch.rand(3, 1, 4, 4)
    logits = torch.randn(3, 1, 4, 4)
    outputs = {"logits": logits, "recon": logits.sigmoid()}
    reference = -torch.distributions.Bernoulli(logits=logits, validate_args=False).log_prob(targets)  # [0, 1] pixels
    assert torch.allclose(reconstruction_nll(outputs, targets, likelihood="bernoulli", sigma=0.1),
                          reference.flatten(1).sum(1), atol=1e-4)
    reference = -torch.distributions.Normal(logits.sigmoid(), 0.2).log_prob(targets).flatten(1).sum(1)
    assert torch.allclose(reconstruction_nll(outputs, targets, likelihood="gaussian", sigma=0.2), reference,
                          atol=1e-4)


def test_kl_weight_warms_up_linearly():
    head = _built(_recipe(Vae(latent=3, width=16), VaeLoss())).head  # the likelihood (bernoulli) is the head's
    assert head.likelihood == "bernoulli"
    loss = VaeLoss(beta=2.0, warmup=0.5).build(head)
    outputs = {"logits": torch.zeros(2, 1, 4, 4), "mu": torch.ones(2, 3), "logvar": torch.zeros(2, 3)}
    targets = torch.full((2, 1, 4, 4), 0.5)
    weights = []
    for progress in (0.0, 0.25, 0.5, 1.0):
        loss.set_progress(progress)
        weights.append(loss(outputs, targets)["kl"].item())
    full = kl_divergence(outputs["mu"], outputs["logvar"]).mean().item() / 16
    assert weights == pytest.approx([0.0, full, 2 * full, 2 * full])


# ---- data: input-only noise keeps the clean target ----------------------------------------------------------------

def test_finish_sample_gives_the_clean_target_when_noise_is_input_only():
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 1), dtype=np.uint8)
    aug = Augment(input_only=(A.GaussNoise(std_range=(0.3, 0.3), p=1.0),))
    prepare = SamplePreparer(aug.compose(train=True, size=16, mean=(0.5,), std=(0.5,)), ["image"])
    noisy_input, targets = prepare(image, {})
    target = targets["image"]
    clean = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    assert torch.equal(target, clean)  # the target is the untouched image in [0, 1]
    assert (noisy_input * 0.5 + 0.5 - clean).abs().mean() > 0.05  # the input got the noise
    prepare = SamplePreparer(aug.compose(train=False, size=16, mean=(0.5,), std=(0.5,)), ["image"])
    plain_input, targets = prepare(image, {})
    target = targets["image"]
    assert torch.equal(target, clean) and torch.allclose(plain_input * 0.5 + 0.5, clean, atol=1e-6)


# ---- heads on several backbones -----------------------------------------------------------------------------------

CONV, VECTOR, VAE = Autoencoder(), Autoencoder(bottleneck=8, width=16), Vae(latent=4, width=16)


@pytest.mark.parametrize(("backbone", "head"), [("lenet5", CONV), ("lenet5", VECTOR), ("lenet5", VAE),
                                                ("resnet20", CONV), ("resnet20", VAE), ("resnet10t", VECTOR),
                                                ("resnet10t", VAE)],
                         ids=["lenet5-conv_code", "lenet5-vector_code", "lenet5-vae", "resnet20-conv_code",
                              "resnet20-vae", "resnet10t-vector_code", "resnet10t-vae"])
def test_heads_reconstruct_the_input_size_on_any_backbone(backbone, head):
    loss = VaeLoss() if isinstance(head, Vae) else ReconstructionLoss()
    model = _built(_recipe(head, loss, backbone=backbone))
    images = torch.randn(2, 1, 32, 32)
    outputs = model(images)
    assert outputs["recon"].shape == (2, 1, 32, 32)
    assert 0 <= outputs["recon"].min() and outputs["recon"].max() <= 1
    assert torch.allclose(outputs["input"], (images * 0.5 + 0.5).clamp(0, 1))
    terms = loss.build(model.head)(outputs, torch.rand(2, 1, 32, 32))
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in model.head.parameters())


def test_vae_samples_are_reproducible_under_a_seed():
    head = _built(_recipe(Vae(latent=4, width=16), VaeLoss())).head.eval()
    first = head.sample(3, torch.Generator().manual_seed(1))
    assert first.shape == (3, 1, 32, 32)
    assert torch.equal(first, head.sample(3, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, head.sample(3, torch.Generator().manual_seed(2)))


def test_reconstruction_metrics_on_known_errors():
    metrics = ReconstructionMetrics()
    targets = torch.rand(4, 1, 16, 16) * 0.8
    metrics.update({"recon": targets + 0.1}, targets)  # every pixel off by 0.1: mse 0.01, psnr 20 dB
    result = metrics.compute()
    assert result["mse"] == pytest.approx(0.01, rel=1e-4)
    assert result["psnr"] == pytest.approx(20.0, rel=1e-4)
    assert 0 < result["ssim"] < 1
    metrics.reset()
    metrics.update({"recon": targets}, targets)
    assert metrics.compute()["ssim"] == pytest.approx(1.0, abs=1e-4)


def test_geometry_unnormalises_per_channel():
    geometry = ImageGeometry(size=8, channels=3, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 1.0))
    pixels = torch.rand(2, 3, 4, 4)
    normalised = (pixels - torch.tensor([0.1, 0.2, 0.3])[:, None, None]) / torch.tensor([0.5, 0.25, 1.0])[:, None, None]
    assert torch.allclose(geometry.unnormalise(normalised), pixels, atol=1e-6)


# ---- the engine end to end ----------------------------------------------------------------------------------------

def _digit_files(folder: Path, count: int = 2) -> list[Path]:
    from sklearn.datasets import load_digits

    folder.mkdir()
    images = load_digits().images
    files = []
    for i in range(count):
        files.append(folder / f"{i}.png")
        Image.fromarray((images[i] * 255 / 16).astype("uint8")).save(files[-1])
    return files


def test_denoising_autoencoder_trains_evaluates_and_predicts(tmp_path):
    noise = Augment(input_only=(A.GaussNoise(std_range=(0.3, 0.3), p=1.0),),
                    input_only_eval=(A.GaussNoise(std_range=(0.3, 0.3), p=1.0),))
    recipe = _recipe(Autoencoder(width=16), ReconstructionLoss(name="l1"), aug=noise)
    metrics = train(recipe, tmp_path / "run")
    assert {"mse", "psnr", "ssim"} <= set(metrics) and metrics["psnr"] > 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["psnr"] == pytest.approx(metrics["psnr"])
    assert (tmp_path / "run" / "predictions_test.png").is_file()

    # the recipe edited for one evaluation only: on clean inputs the grid has no "noisy input" panel
    evaluate(tmp_path / "run" / "best.ckpt", out=tmp_path / "clean", overrides={"aug.input_only_eval": ()})
    noisy_grid, clean_grid = (Image.open(d / "predictions_test.png") for d in (tmp_path / "run", tmp_path / "clean"))
    assert clean_grid.size[0] < noisy_grid.size[0]
    assert load_module(tmp_path / "run" / "best.ckpt").recipe.aug.input_only_eval  # the checkpoint is untouched

    files = _digit_files(tmp_path / "digits")
    results = predict(tmp_path / "run" / "best.ckpt", files, out=tmp_path / "pred")
    assert len(results) == 2 and all(r["mse"] > 0 and r["psnr"] == pytest.approx(-10 * math.log10(r["mse"]), abs=0.01)
                                     for r in results)
    written = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert [Path(r["image"]).name for r in written] == ["0.png", "1.png"]
    pictures = sorted((tmp_path / "pred" / "reconstructions").iterdir())
    assert [p.name for p in pictures] == ["00000_0.png", "00001_1.png"]
    assert Image.open(pictures[0]).size == (32, 32)
    assert len(list((tmp_path / "pred" / "images").iterdir())) == 2


def test_vae_trains_and_zoo_sample_draws_reproducible_pictures(tmp_path, capsys):
    run = tmp_path / "run"
    metrics = train(_recipe(Vae(latent=4, width=16), VaeLoss(warmup=0.5)), run)
    assert metrics["elbo"] < 0 and metrics["elbo_per_pixel"] == pytest.approx(metrics["elbo"] / 1024)
    assert {"kl", "mse", "psnr", "ssim"} <= set(metrics)
    ckpt = str(run / "best.ckpt")
    for name, seed in (("a.png", "3"), ("b.png", "3"), ("c.png", "4")):
        assert main(["sample", ckpt, "--n", "6", "--seed", seed, "--out", str(tmp_path / name)]) == 0
    a, b, c = (np.asarray(Image.open(tmp_path / n)) for n in ("a.png", "b.png", "c.png"))
    assert a.shape == (2 * 34 + 2, 3 * 34 + 2, 3)  # 6 samples of 32 px: 3 columns x 2 rows, 2 px gaps
    assert np.array_equal(a, b) and not np.array_equal(a, c)

    files = _digit_files(tmp_path / "digits")
    out = tmp_path / "line.png"
    assert main(["sample", ckpt, "--interpolate", *map(str, files), "--steps", "5", "--out", str(out)]) == 0
    assert np.asarray(Image.open(out)).shape == (32 + 4, 7 * 34 + 2, 3)  # first | 5 steps | second
    assert "wrote" in capsys.readouterr().out
    assert evaluate(ckpt)["elbo"] == pytest.approx(metrics["elbo"], rel=1e-5)


def test_sample_refuses_heads_without_a_prior(trained_checkpoint, tmp_path, capsys):
    assert main(["sample", str(trained_checkpoint), "--out", str(tmp_path / "x.png")]) != 0
    assert "its head(s) are classification; zoo sample needs exactly one VAE head" in capsys.readouterr().err
    assert main(["sample", str(trained_checkpoint), "--interpolate", "a.png", "b.png", "--out",
                 str(tmp_path / "x.png")]) != 0
    assert "its head(s) are classification; zoo sample needs exactly one VAE head" in capsys.readouterr().err
    with pytest.raises(ZooError, match="--n must be at least 1"):
        sample(trained_checkpoint, n=0, out=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_classifier_probabilities_fit_generated_images_to_the_classifier(trained_checkpoint):
    classifier = load_module(trained_checkpoint)
    data = classifier.recipe.data  # grey, 32 px, mean 0.5, std 0.5
    images = torch.rand(3, 1, data.image_size, data.image_size)
    with torch.no_grad():
        expected = classifier.model((images - 0.5) / 0.5).softmax(dim=1)
    probabilities = classifier_probabilities(images, classifier.model, data)
    assert torch.allclose(probabilities, expected, atol=1e-6)
    assert torch.allclose(classifier_probabilities(images.expand(-1, 3, -1, -1), classifier.model, data), expected,
                          atol=1e-6)  # colour images are averaged to the classifier's grey
    small = classifier_probabilities(torch.rand(2, 1, 16, 16), classifier.model, data)  # resized to 32 px
    assert small.shape == (2, 10) and torch.allclose(small.sum(dim=1), torch.ones(2))
