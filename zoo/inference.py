"""Prediction from Python: a checkpoint loaded once, then ``predict`` on paths, images, arrays or batches.

    import zoo
    model = zoo.load("runs/demo/best.ckpt")           # device="auto": the GPU when there is one
    model.predict("photo.jpg")                         # one dict, as one entry of `zoo predict`'s JSON
    model.predict(["a.png", "b.png"], batch_size=64)   # a list of dicts
    model.predict(numpy_hwc_uint8)                     # PIL images, numpy arrays and tensors too

``zoo predict`` and :func:`zoo.engine.predict` are :func:`predict_files` over this class, so the API, the CLI and the
engine decode outputs in one place (``zoo.engine.run.decode_outputs``, i.e. each head's ``Task.predict``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from zoo.data.images import IMAGE_EXTENSIONS, ImageDecodeError, image_to_array, load_image
from zoo.errors import ZooError
from zoo.task import Geometry

__all__ = ["Model", "load", "resolve_device", "image_files", "predict_files", "FilePredictions"]

log = logging.getLogger(__name__)
ImageInput = str | Path | Image.Image | np.ndarray | torch.Tensor


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the first GPU when CUDA is available, else the CPU; anything else as ``torch.device`` takes it."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ZooError(f"device {device!r}: {e}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None


class Model:
    """A trained checkpoint ready to predict: weights loaded once, on ``device``, in eval mode.

    Args:
        module: the loaded ``ZooModule`` (``zoo.engine.load_module``); its recipe preprocesses and its heads decode.
        device: where the model runs.
        batch_size: images per forward pass when ``predict`` gets many.
        members: further modules of an ensemble (same heads and classes, see ``zoo.ensemble``): their outputs are
            combined with ``module``'s by each head's ``Task.combine`` before decoding.
        tta: test-time augmentations (``("hflip",)``): each view mapped back and combined the same way.
    """

    def __init__(self, module: Any, *, device: torch.device, batch_size: int = 32, members: Sequence[Any] = (),
                 tta: Sequence[str] = ()) -> None:
        from zoo.ensemble import check_tta

        check_tta(module, tta)
        self.tta = tuple(tta)
        if batch_size < 1:
            raise ZooError(f"batch_size: {batch_size} is not a positive number of images")
        self.module = module.to(device).eval()
        self.members = [self.module, *(m.to(device).eval() for m in members)]
        self.device = device
        self.batch_size = batch_size
        self.recipe = module.recipe
        self._transform = self.recipe.transform(train=False, with_targets=False)

    @property
    def classes(self) -> dict[str, tuple[str, ...]]:
        """Class names per target key (``{"label": ("0", "1", ...)}``)."""
        return self.module.classes

    def __repr__(self) -> str:
        heads = ", ".join(f"{n or 'head'}: {type(c.spec).__name__}" for n, c in self.module.contexts.items())
        return f"Model({self.recipe.name!r}, {heads}, device={self.device})"

    # ---- the one forward + decode path ----------------------------------------------------------------------------

    @torch.no_grad()
    def outputs(self, batch: torch.Tensor) -> Any:
        """Head outputs (on the CPU) of a batch of normalised model inputs ``[N, C, H, W]`` (an ensemble's combined)."""
        from lightning.pytorch.utilities import move_data_to_device

        from zoo.ensemble import combine_outputs, view_outputs

        batch = batch.to(self.device)
        return combine_outputs(self.module, [move_data_to_device(outputs, "cpu") for m in self.members
                                             for outputs in view_outputs(self.module, m, batch, self.tta)])

    def decode(self, outputs: Any, geometry: Geometry) -> list[dict]:
        from zoo.engine.run import decode_outputs

        return decode_outputs(self.module, outputs, geometry)

    def predict_batch(self, batch: torch.Tensor) -> list[dict]:
        """Predictions for normalised model inputs ``[N, C, H, W]`` (as a data loader yields them); coordinates and
        masks are in model-input pixels."""
        return self.decode(self.outputs(batch), Geometry(input_size=tuple(batch.shape[-2:]),
                                                         resize=self.recipe.aug.resize))

    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[dict]:
        """Predictions for ``uint8 [H, W, C]`` pictures of any size (``C`` = the recipe's ``data.channels``): each is
        resized and normalised as the recipe's evaluation images are, and boxes and masks are mapped back to it."""
        if not images:
            return []
        batch = torch.stack([self._transform(image=image)["image"] for image in images])
        geometry = Geometry(input_size=tuple(batch.shape[-2:]), resize=self.recipe.aug.resize,
                            image_sizes=[tuple(image.shape[:2]) for image in images])
        return self.decode(self.outputs(batch), geometry)

    def predict(self, x: ImageInput | Sequence[ImageInput], *, batch_size: int | None = None) -> dict | list[dict]:
        """Predictions, each the same dict as one entry of ``zoo predict``'s JSON (without its ``"image"`` key).

        Args:
            x: an image file; a folder (every image in it); a PIL image; a numpy ``uint8`` array ``[H, W]``,
                ``[H, W, C]`` (C 1, 3 or 4) or a batch ``[N, H, W, C]``; a torch tensor ``[N, C, H, W]`` or ``[C, H,
                W]`` — ``uint8`` pixels (treated like the arrays) or ``float`` model inputs already resized and
                normalised (as the recipe's data loader yields; results in model-input pixels); or a list of any of
                these.
            batch_size: images per forward pass (default: the one given to :func:`load`).

        Returns:
            One dict for one image (a path, a PIL image, one array or one ``[C, H, W]`` tensor); a list of dicts, in
            input order, for a list, a folder or a batch.

        Raises:
            ImageDecodeError: a file cannot be decoded (it names the file).
            ZooError: an input of a kind or shape listed nowhere above.
        """
        size = batch_size or self.batch_size
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            batch = x[None] if x.ndim == 3 else x
            if batch.ndim != 4:
                raise ZooError(f"a float tensor input is a batch [N, C, H, W] of model inputs, not shape "
                               f"{list(x.shape)}")
            results = [p for start in range(0, len(batch), size)
                       for p in self.predict_batch(batch[start:start + size])]
            return results[0] if x.ndim == 3 else results
        images, single = self._as_arrays(x)
        results = [p for chunk in _chunks(images, size) for p in self.predict_arrays(chunk)]
        return results[0] if single else results

    def draw(self, image: np.ndarray, prediction: dict) -> np.ndarray | None:
        """``uint8 [h, w, 3]``: the prediction drawn on its image by the head's task (``None``: the task draws
        nothing)."""
        from zoo.engine.run import draw_prediction

        return draw_prediction(self.module, image, prediction)

    # ---- inputs -------------------------------------------------------------------------------------------------

    def to_array(self, x: str | Path | Image.Image | np.ndarray | torch.Tensor) -> np.ndarray:
        """One image input → ``uint8 [H, W, data.channels]`` through the decoder every file goes through."""
        channels = self.recipe.data.channels
        if isinstance(x, (str, Path)):
            return load_image(x, channels=channels)
        if isinstance(x, torch.Tensor):
            if x.dtype != torch.uint8 or x.ndim != 3:
                raise ZooError(f"a tensor image is uint8 [C, H, W] (or a float batch of model inputs), not "
                               f"{x.dtype} of shape {list(x.shape)}")
            x = x.permute(1, 2, 0).cpu().numpy()
        if isinstance(x, np.ndarray):
            if x.dtype != np.uint8 or x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[2] not in (1, 3, 4)):
                raise ZooError(f"a numpy image is uint8 [H, W] or [H, W, C] with C 1, 3 or 4, not {x.dtype} of shape "
                               f"{list(x.shape)}")
            x = Image.fromarray(x[..., 0] if x.ndim == 3 and x.shape[2] == 1 else x)
        if isinstance(x, Image.Image):
            return image_to_array(x, channels=channels)
        raise ZooError(f"cannot predict on a {type(x).__name__}: give a path, a PIL image, a numpy uint8 array or a "
                       f"torch tensor (or a list of them)")

    def _as_arrays(self, x: Any) -> tuple[list[np.ndarray], bool]:
        """The images of an input and whether it was a single image."""
        if isinstance(x, (list, tuple)):
            return [self.to_array(item) for item in x], False
        if isinstance(x, (str, Path)) and Path(x).is_dir():
            return [self.to_array(f) for f in image_files([x])], False
        if isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim == 4:
            return [self.to_array(item) for item in x], False
        return [self.to_array(x)], True


def load(checkpoint: str | Path | Sequence[str | Path], *, device: str | torch.device = "auto", batch_size: int = 32,
         overrides: dict[str, Any] | None = None, tta: Sequence[str] = ()) -> Model:
    """A checkpoint as a :class:`Model`, loaded once (``weights_only``; see ``zoo.engine.load_module``).

    Args:
        checkpoint: a zoo checkpoint (``best.ckpt``); its recipe and class names are inside. A list of checkpoints
            is an ensemble (``zoo.ensemble``): the first one's recipe preprocesses and decodes.
        device: "auto" (the GPU when present), "cpu", "cuda", "cuda:1", or a ``torch.device``.
        batch_size: images per forward pass.
        overrides: dotted path → value changes to the saved recipe that keep the weights' shapes, e.g. a head's
            predict options ``{"model.head.top_k": 3}`` or ``{"model.head.score_threshold": 0.5}``.
        tta: test-time augmentations, ``("hflip",)`` (see ``zoo.ensemble``).
    """
    from zoo.engine.run import load_module
    from zoo.ensemble import check_members

    paths = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    if not paths:
        raise ZooError("zoo.load: no checkpoint given")
    modules = [load_module(p, overrides) for p in paths]
    check_members(modules, paths)
    return Model(modules[0], device=resolve_device(device), batch_size=batch_size, members=modules[1:], tta=tta)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def image_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files (by extension, sorted, recursively for folders) of files and folders; a missing one is an error."""
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


@dataclass
class FilePredictions:
    """What :func:`predict_files` did: ``{"image": path, **prediction}`` per decoded file, the files skipped (path,
    why), and the files it wrote."""

    results: list[dict[str, Any]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)


# Drawn pictures keep their input's file type where Pillow writes it losslessly enough (JPEG in → JPEG out).
_DRAWN_FORMATS = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpeg", ".bmp": ".bmp", ".tif": ".tif", ".tiff": ".tiff",
                  ".webp": ".webp", ".ppm": ".ppm"}


def predict_files(model: Model, inputs: Sequence[str | Path], *, out: str | Path | None = None,
                  progress: bool | None = None) -> FilePredictions:
    """Predictions for image files and folders, ``model.batch_size`` at a time, with a progress bar (``progress``:
    ``None`` shows it when stderr is a terminal).

    A file that cannot be decoded is skipped with a warning naming it; it is listed in ``skipped`` (and in
    ``out/skipped.json``). Only when no file at all could be decoded is that an error.

    With ``out``: ``predictions.json`` (the list of results), the tasks' own formats (detection: COCO results;
    segmentation: mask PNGs), and each image with its prediction drawn in ``out/images/`` in the input's file type.
    """
    from tqdm import tqdm

    from zoo.engine.run import _head_folder

    files = image_files(inputs)
    found = FilePredictions(results=[])
    drawn_dir = Path(out) / "images" if out is not None else None
    if drawn_dir is not None:
        drawn_dir.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(files), desc="predict", unit="img", disable=None if progress is None else not progress,
              leave=False) as bar:
        for chunk in _chunks(files, model.batch_size):
            decoded: list[tuple[Path, np.ndarray]] = []
            for f in chunk:
                try:
                    decoded.append((f, model.to_array(f)))
                except ImageDecodeError as e:
                    log.warning("skipped %s: %s", f, e.reason)
                    found.skipped.append((str(f), e.reason))
            predictions = model.predict_arrays([image for _, image in decoded])
            for (f, image), pred in zip(decoded, predictions):
                found.results.append({"image": str(f), **pred})
                picture = model.draw(image, pred) if drawn_dir is not None else None
                if picture is not None:
                    path = drawn_dir / f"{len(found.results) - 1:05d}_{f.stem}{_DRAWN_FORMATS.get(f.suffix.lower(), '.png')}"
                    Image.fromarray(picture).save(path)
                    found.written.append(path)
            bar.update(len(chunk))
    if not found.results:
        raise ZooError(f"none of the {len(files)} image file(s) could be decoded: "
                       + "; ".join(f"{p}: {why}" for p, why in found.skipped[:5]))
    if out is not None:
        out = Path(out)
        found.written.append(out / "predictions.json")
        found.written[-1].write_text(json.dumps(found.results, indent=1))
        if found.skipped:
            found.written.append(out / "skipped.json")
            found.written[-1].write_text(json.dumps([{"image": p, "reason": why} for p, why in found.skipped],
                                                    indent=1))
        for name, ctx in model.module.contexts.items():
            save = type(ctx.spec).task.save_predictions
            if save is not None:
                found.written += save([{"image": r["image"], **(r[name] if name else r)} for r in found.results],
                                      ctx.classes, _head_folder(out, name))
    return found
