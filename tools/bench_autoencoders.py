"""The digits autoencoder benchmarks of issue 4, in one run: reconstruction, denoising, and digit-like VAE samples.

1. ``recipes/autoencode_digits.py``: test-split ``psnr`` of the reconstruction (target ≥ 20 dB).
2. ``recipes/denoise_digits.py`` against the plain autoencoder, both evaluated on the SAME noisy test inputs
   distribution (Gaussian noise of std ``--noise`` of the pixel range, applied to the input only through
   ``aug.input_only_eval``) against the clean images: the denoiser must have the higher ``psnr``. Albumentations
   draws fresh noise on each evaluation, so each model is evaluated ``--repeats`` times and the spread reported.
3. ``recipes/vae_digits.py``: ``--n`` samples from the prior, scored by the digits classifier
   (``recipes/classify_digits_lenet5.py``): mean top-1 probability (target ≥ 0.7).

Each recipe is trained into ``--runs/<recipe name>`` unless that folder already holds ``best.ckpt`` (pass
``--retrain`` to train anyway); extra ``overrides`` (``trainer.max_epochs=5``) apply to the three generative recipes.
Run it under the shared CPU lock:

    flock /tmp/zoo-cpu.lock python tools/bench_autoencoders.py --runs runs/bench_ae --json runs/bench_ae/bench.json

Records go in docs/autoencoders.md (Benchmarks).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import albumentations as A
import torch

from heads.vae import classifier_probabilities
from zoo.engine import evaluate, load_module, train
from zoo.recipe import load_recipe

RECIPES = {"autoencoder": "recipes/autoencode_digits.py", "denoiser": "recipes/denoise_digits.py",
           "vae": "recipes/vae_digits.py", "classifier": "recipes/classify_digits_lenet5.py"}


def trained(role: str, args: argparse.Namespace) -> tuple[Path, dict, float]:
    """``(best.ckpt, test metrics, training seconds)`` of the role's recipe, training it unless already there."""
    overrides = [] if role == "classifier" else args.overrides
    recipe = load_recipe(RECIPES[role], overrides)
    run = args.runs / recipe.name
    if (run / "best.ckpt").is_file() and (run / "metrics.json").is_file() and not args.retrain:
        return run / "best.ckpt", json.loads((run / "metrics.json").read_text()), float("nan")
    start = time.perf_counter()
    metrics = train(recipe, run)
    return run / "best.ckpt", metrics, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_ae"), help="folder of the training runs")
    parser.add_argument("--retrain", action="store_true", help="train even where a run folder has best.ckpt")
    parser.add_argument("--noise", type=float, default=0.3, help="noise std (pixel range 1) of the noisy evaluation")
    parser.add_argument("--n", type=int, default=1000, help="VAE samples scored by the classifier")
    parser.add_argument("--repeats", type=int, default=3, help="noisy evaluations of each model (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the VAE's prior draws")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("overrides", nargs="*", help="dotted.path=value for the AE, denoiser and VAE recipes")
    args = parser.parse_args(argv)
    results: dict = {"command": shlex.join([Path(sys.executable).name, *sys.argv]),
                     "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
                     "seconds": {}}

    runs = {role: trained(role, args) for role in RECIPES}
    for role, (_, metrics, seconds) in runs.items():
        results["seconds"][role] = round(seconds, 1)
        results[role] = {k: v for k, v in metrics.items() if isinstance(v, float)}
        print(f"{role:<11} train {seconds:7.1f} s  test {results[role]}")

    noise = A.GaussNoise(std_range=(args.noise, args.noise), mean_range=(0.0, 0.0), p=1.0)
    noisy = {}
    for role in ("autoencoder", "denoiser"):  # fresh noise draws each time: repeats show their spread
        pictures = args.runs / f"noisy_test_{role}"  # predictions_test.png: clean | noisy input | reconstruction
        psnrs = [evaluate(runs[role][0], out=pictures, overrides={"aug.input_only_eval": (noise,)})["psnr"]
                 for _ in range(args.repeats)]
        noisy[role] = {"psnr_mean": round(sum(psnrs) / len(psnrs), 3), "psnr_min": round(min(psnrs), 3),
                       "psnr_max": round(max(psnrs), 3)}
        print(f"noisy test (std {args.noise}): {role} psnr {noisy[role]['psnr_mean']:.2f} dB "
              f"(range {noisy[role]['psnr_min']:.2f}..{noisy[role]['psnr_max']:.2f} over {args.repeats} draws)")
    results["noisy_test"] = {"noise_std": args.noise, **noisy}

    vae, classifier = load_module(runs["vae"][0]), load_module(runs["classifier"][0])
    samples = vae.model.head.sample(args.n, torch.Generator().manual_seed(args.seed))
    confidence, digit = classifier_probabilities(samples, classifier.model, classifier.recipe.data).max(dim=1)
    results["vae_samples"] = {"n": args.n, "mean_top1_probability": round(confidence.mean().item(), 4),
                              "share_above_0.9": round((confidence > 0.9).float().mean().item(), 4),
                              "classes": dict(zip(classifier.classes, torch.bincount(digit, minlength=10).tolist()))}
    print(f"VAE samples: mean top-1 probability {results['vae_samples']['mean_top1_probability']:.3f} over {args.n}")

    checks = {"autoencoder psnr >= 20 dB": results["autoencoder"]["psnr"] >= 20,
              "denoiser beats autoencoder on noisy inputs":
                  noisy["denoiser"]["psnr_min"] > noisy["autoencoder"]["psnr_max"],
              "VAE samples mean top-1 >= 0.7": results["vae_samples"]["mean_top1_probability"] >= 0.7}
    results["checks"] = checks
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
