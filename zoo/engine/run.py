"""Train, evaluate and predict: the three things the CLI does, for any task."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import move_data_to_device

from zoo.data.base import DataSplits
from zoo.data.images import IMAGE_EXTENSIONS, load_image
from zoo.engine.checkpoint import AtomicCheckpointIO, read_checkpoint
from zoo.engine.datamodule import ZooDataModule
from zoo.engine.module import CHECKPOINT_KEY, ZooModule
from zoo.errors import RecipeError, ZooError
from zoo.recipe import Recipe
from zoo.task import PredictOptions

__all__ = ["train", "evaluate", "predict", "sample", "interpolate", "load_module", "prepare_data", "picture_grid",
           "to_uint8_images",
           "save_prediction_grid"]

log = logging.getLogger(__name__)


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=".*number of training batches.*smaller than the logging interval.*")


class EpochLine(L.Callback):
    """One line per epoch, for logs that are not a terminal (where a progress bar would flood).

    Printed at the end of the training epoch, which Lightning reaches after that epoch's validation and after the
    module has logged its metrics (a callback's ``on_validation_epoch_end`` runs before the module's, so it would
    show the previous epoch's numbers).
    """

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        shown = {k: float(v) for k, v in trainer.callback_metrics.items()
                 if k.startswith(("train/", "val/")) and k.count("/") == 1}
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  "
              + "  ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())), flush=True)


def prepare_data(recipe: Recipe) -> DataSplits:
    """Runs the adapter's ``setup`` and checks the head against the classes it found."""
    recipe.data.preflight()
    splits = recipe.data.setup()
    head = recipe.model.head
    if head.num_classes is not None and head.num_classes != len(splits.classes):
        raise RecipeError("model.head.num_classes", f"is {head.num_classes} but the data has {len(splits.classes)} "
                                                    f"classes {list(splits.classes)[:10]}")
    return splits


def _batches(limit: int | float) -> int | float:
    """Lightning's ``limit_*_batches``: an int counts batches, a float ≤ 1 is a fraction; a float above 1 counts."""
    return limit if isinstance(limit, int) or limit <= 1 else int(limit)


def _trainer(recipe: Recipe, out: Path | None, callbacks: list, *, logger: Any = False, **overrides: Any) -> L.Trainer:
    t = recipe.trainer
    kwargs = dict(
        max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices, strategy=t.strategy,
        precision=t.precision, deterministic=t.deterministic, gradient_clip_val=t.gradient_clip_val,
        limit_train_batches=_batches(t.limit_train_batches), limit_val_batches=_batches(t.limit_val_batches),
        limit_test_batches=_batches(t.limit_test_batches),
        log_every_n_steps=t.log_every_n_steps, callbacks=callbacks, logger=logger,
        default_root_dir=str(out) if out else None, plugins=[AtomicCheckpointIO()],
        enable_model_summary=False, enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
    )
    kwargs["enable_progress_bar"] = sys.stderr.isatty()
    kwargs.update(overrides)
    if kwargs["enable_progress_bar"]:  # redraw as often as the loss is logged, not every step
        kwargs["callbacks"] = [*kwargs["callbacks"], TQDMProgressBar(refresh_rate=t.log_every_n_steps)]
    elif out is not None:
        kwargs["callbacks"] = [*kwargs["callbacks"], EpochLine()]
    return L.Trainer(**kwargs)


def train(recipe: Recipe, out: str | Path) -> dict[str, float]:
    """Fits ``recipe`` and evaluates the best checkpoint on the test split.

    Writes to ``out``: ``best.ckpt``, ``last.ckpt``, ``metrics.json``, ``recipe.json`` / ``recipe.txt``,
    ``data.json`` (split sizes, skipped files), ``logs/`` (CSV and TensorBoard), and the task's pictures.
    """
    _quiet_lightning()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(recipe.to_data(), indent=1))
    (out / "recipe.txt").write_text(recipe.listing() + "\n")
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    splits = prepare_data(recipe)
    (out / "data.json").write_text(json.dumps({
        "classes": list(splits.classes),
        "sizes": {s: len(getattr(splits, s)) for s in ("train", "val", "test")},
        "skipped": [[str(p), r] for p, r in splits.skipped],
    }, indent=1))
    if splits.skipped:
        print(f"skipped {len(splits.skipped)} undecodable image(s); listed in {out / 'data.json'}")
    datamodule = ZooDataModule(recipe, splits)
    module = ZooModule(recipe, splits.classes)
    task = recipe.task
    monitor = f"val/{task.monitor}"
    callbacks: list = [
        ModelCheckpoint(dirpath=out, filename="best", monitor=monitor, mode=task.mode, save_last=True,
                        save_top_k=1, enable_version_counter=False, auto_insert_metric_name=False),
        LearningRateMonitor(logging_interval="epoch"),
    ]
    if recipe.trainer.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode=task.mode, patience=recipe.trainer.early_stopping_patience))
    loggers = [CSVLogger(out, name="logs", version=""), TensorBoardLogger(out, name="logs", version="")]
    trainer = _trainer(recipe, out, callbacks, logger=loggers)
    trainer.fit(module, datamodule=datamodule)
    best = out / "best.ckpt"
    metrics = evaluate(best, split="test", out=out, splits=splits)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def load_module(checkpoint: str | Path, overrides: dict[str, Any] | None = None) -> ZooModule:
    """Rebuilds the trained module from a checkpoint alone (recipe and classes are inside it); ``overrides``
    (dotted path → value) edit the saved recipe first."""
    data = read_checkpoint(checkpoint)
    saved = data[CHECKPOINT_KEY]
    # The weights are in the checkpoint: don't look for the pretrained files the run started from.
    recipe = Recipe.from_data(saved["recipe"]).override(**{"model.backbone.pretrained": False,
                                                            "model.weights": None, **(overrides or {})})
    module = ZooModule(recipe, saved["classes"])
    module.load_state_dict(data["state_dict"])
    module.eval()
    return module


def evaluate(checkpoint: str | Path, *, split: str = "test", out: str | Path | None = None,
             splits: DataSplits | None = None, overrides: dict[str, Any] | None = None) -> dict[str, float]:
    """Metrics of a checkpoint on one split of its recipe's data; pictures go to ``out`` when given.

    ``overrides`` (dotted path → value) edit the saved recipe for this evaluation only, e.g.
    ``{"aug.input_only_eval": (A.GaussNoise(...),)}`` to measure a model on noisy inputs; the weights stay.
    """
    _quiet_lightning()
    module = load_module(checkpoint, overrides)
    if splits is None:
        splits = prepare_data(module.recipe)
    if tuple(splits.classes) != tuple(module.classes):
        raise ZooError(f"{checkpoint}: trained on classes {module.classes[:10]}, the data now has "
                       f"{list(splits.classes)[:10]}")
    loader = ZooDataModule(module.recipe, splits).split_loader(split)
    trainer = _trainer(module.recipe, None, [], enable_progress_bar=False, devices=1, strategy="auto")
    trainer.test(module, dataloaders=loader, verbose=False)
    metrics = dict(module.last_metrics)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        module.test_metrics.save_artifacts(Path(out))
        save_prediction_grid(module, loader, Path(out) / f"predictions_{split}.png")
    return metrics


def _image_files(inputs: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif item.is_file():
            files.append(item)
        else:
            raise ZooError(f"{item}: no such image file or folder")
    if not files:
        raise ZooError(f"no images found in {[str(i) for i in inputs]}")
    return files


def to_uint8_images(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised model inputs ``[N, C, H, W]`` back to ``uint8 [N, H, W, C]`` pictures."""
    c = batch.shape[1]
    m = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1).expand(1, c, 1, 1)
    sd = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1).expand(1, c, 1, 1)
    pixels = (batch.detach().float().cpu() * sd + m).clamp(0, 1) * 255
    return pixels.round().byte().permute(0, 2, 3, 1).numpy()


def picture_grid(pictures: Sequence[np.ndarray], *, columns: int = 4, gap: int = 4) -> np.ndarray:
    """Tiles ``uint8 [h, w, 3]`` pictures of any sizes into one white-separated grid."""
    pictures = [np.repeat(p, 3, axis=2) if p.ndim == 3 and p.shape[2] == 1 else p for p in pictures]
    h = max(p.shape[0] for p in pictures)
    w = max(p.shape[1] for p in pictures)
    rows = -(-len(pictures) // columns)
    cols = min(columns, len(pictures))
    grid = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), 255, np.uint8)
    for i, p in enumerate(pictures):
        y, x = gap + (i // columns) * (h + gap), gap + (i % columns) * (w + gap)
        grid[y:y + p.shape[0], x:x + p.shape[1]] = p
    return grid


@torch.no_grad()
def save_prediction_grid(module: ZooModule, loader: Any, path: Path, *, count: int = 16) -> Path | None:
    """The first ``count`` images of ``loader`` with their predictions and truth, drawn by the task."""
    task, recipe = module.task, module.recipe
    if task.draw is None:
        return None
    images, targets = next(iter(loader))
    images, targets = images[:count], targets[:count]
    outputs = move_data_to_device(module(images.to(module.device)), "cpu")
    size = tuple(images.shape[-2:])
    options = PredictOptions(input_size=size, resize=recipe.aug.resize)
    predictions = task.predict(outputs, module.classes, options)
    pictures = to_uint8_images(images, recipe.data.mean, recipe.data.std)
    drawn = [task.draw(pic, pred, target, module.classes)
             for pic, pred, target in zip(pictures, predictions, targets)]
    Image.fromarray(picture_grid(drawn)).save(path)
    return path


@torch.no_grad()
def predict(checkpoint: str | Path, inputs: Sequence[str | Path], *, options: PredictOptions | None = None,
            batch_size: int = 32, out: str | Path | None = None) -> list[dict[str, Any]]:
    """Predictions for image files or folders: one ``{"image": path, **task prediction}`` per image.

    With ``out``, writes ``predictions.json``, the task's own formats, and each image with its prediction drawn
    (``out/images/``).
    """
    module = load_module(checkpoint)
    recipe, task = module.recipe, module.task
    # Images only (no targets): without the task's bbox_params, which would demand box labels.
    transform = recipe.aug.compose(train=False, size=recipe.data.image_size, mean=recipe.data.mean,
                                   std=recipe.data.std)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module.to(device)
    files = _image_files(inputs)
    base = options or PredictOptions()
    size = recipe.data.image_size
    results: list[dict[str, Any]] = []
    drawn_dir = Path(out) / "images" if out is not None and task.draw is not None else None
    if drawn_dir is not None:
        drawn_dir.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        originals = [load_image(f, channels=recipe.data.channels) for f in chunk]
        batch = torch.stack([transform(image=image)["image"] for image in originals])
        outputs = move_data_to_device(module(batch.to(device)), "cpu")
        options = dataclasses.replace(base, input_size=(size, size), resize=recipe.aug.resize,
                                      image_sizes=[image.shape[:2] for image in originals])
        for f, image, pred in zip(chunk, originals, task.predict(outputs, module.classes, options)):
            results.append({"image": str(f), **pred})
            if drawn_dir is not None:
                picture = task.draw(image, pred, None, module.classes)
                Image.fromarray(picture).save(drawn_dir / f"{len(results) - 1:05d}_{f.stem}.png")
    if out is not None:
        out = Path(out)
        (out / "predictions.json").write_text(json.dumps(results, indent=1))
        if task.save_predictions is not None:
            task.save_predictions(results, module.classes, out)
    return results


def _generative_head(module: ZooModule, checkpoint: str | Path, *methods: str) -> Any:
    head = module.model.head
    missing = [m for m in methods if not callable(getattr(head, m, None))]
    if missing:
        raise ZooError(f"{checkpoint}: its {module.task.name} head {type(head).__name__} has no {'/'.join(missing)} "
                       f"method; this needs a generative head with a latent space, such as heads.Vae")
    return head


def _pixels_to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """``[N, C, H, W]`` in [0, 1] → ``uint8 [H, W, C]`` pictures."""
    return list((images.detach().float().cpu().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy())


@torch.no_grad()
def sample(checkpoint: str | Path, *, n: int = 64, out: str | Path, seed: int = 0) -> Path:
    """Draws ``n`` images from a generative head's prior (``head.sample(n, generator) -> [n, C, H, W]`` in [0, 1])
    into one grid PNG at ``out``; the same ``seed`` gives the same picture."""
    if n < 1:
        raise ZooError(f"--n must be at least 1, got {n}")
    module = load_module(checkpoint)
    head = _generative_head(module, checkpoint, "sample")
    module.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    images = head.sample(n, torch.Generator().manual_seed(seed))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture_grid(_pixels_to_uint8(images), columns=int(np.ceil(np.sqrt(n))), gap=2)).save(out)
    return out


@torch.no_grad()
def interpolate(checkpoint: str | Path, first: str | Path, second: str | Path, *, steps: int = 8,
                out: str | Path) -> Path:
    """A picture of the straight line between two images' latent codes: ``first | decoded steps | second``.

    Needs a head with ``encode(features) -> codes [N, D]`` and ``decode(codes) -> images [N, C, H, W]`` in [0, 1].
    """
    if steps < 2:
        raise ZooError(f"--steps must be at least 2, got {steps}")
    module = load_module(checkpoint)
    head = _generative_head(module, checkpoint, "encode", "decode")
    recipe = module.recipe
    transform = recipe.transform(train=False)
    files = [Path(first), Path(second)]
    for f in files:
        if not f.is_file():
            raise ZooError(f"{f}: no such image file (--interpolate takes two image files)")
    batch = torch.stack([transform(image=load_image(f, channels=recipe.data.channels))["image"] for f in files])
    codes = head.encode(module.model.backbone(batch))  # [2, D]
    t = torch.linspace(0, 1, steps)[:, None]
    images = head.decode(codes[0] * (1 - t) + codes[1] * t)  # [steps, C, H, W]
    ends = to_uint8_images(batch, recipe.data.mean, recipe.data.std)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    row = [ends[0], *_pixels_to_uint8(images), ends[1]]
    Image.fromarray(picture_grid(row, columns=len(row), gap=2)).save(out)
    return out
