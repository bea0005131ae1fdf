"""Adapters for models with several heads: one data set labelled for every task, or several data sets combined.

- :class:`ShapesMultiTaskData`: the embedded shapes set with boxes, masks and captions for every image (the
  generator knows every label), for one backbone trained jointly with detection, segmentation and captioning heads.
- :class:`MultiData`: the splits of several adapters, concatenated. Each sample carries the targets of the adapter
  it came from, so an adapter of boxes and an adapter of masks give a set where half the images lack masks and half
  lack boxes: each head learns from the samples that have its target only (``zoo.data.targets``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from zoo.data.base import DataSplits, ImageData, SampleSource
from zoo.data.captions import CaptionSource, _check_captions, build_vocabulary
from zoo.data.detection import BoxReport, DetectionRecord, DetectionSource, _coco_records
from zoo.data.segmentation import IGNORE_INDEX, load_mask, split_indices, to_class_indices
from zoo.data.shapes import SHAPE_CLASSES, shapes_root
from zoo.data.shapes_data import ShapesData
from zoo.errors import RecipeError, ZooError
from zoo.recipe.spec import Range, spec

__all__ = ["ShapesMultiTaskData", "MultiData", "ConcatSource"]

_SPLITS = ("train", "val", "test")


@dataclass
class _ShapesSource:
    """One split of the shapes set: ``(image, {"boxes", "mask", "caption"})`` per sample. A training split holds one
    sample per (image, caption) pair, as :class:`zoo.data.captions.CaptionSource` does (boxes and masks repeat)."""

    boxes: DetectionSource
    masks: list[Path]
    captions: CaptionSource  # its samples (image, caption) are this source's samples

    def __len__(self) -> int:
        return len(self.captions)

    def load(self, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        i, j = self.captions.samples[index]
        image, boxes = self.boxes.load(i)
        mask = to_class_indices(load_mask(self.masks[i]), num_classes=len(SHAPE_CLASSES) + 1,
                                ignore_index=IGNORE_INDEX, where=self.masks[i])
        return image, {"boxes": boxes, "mask": mask, "caption": self.captions.target(i, j)}


@spec
class ShapesMultiTaskData(ShapesData):
    """The shapes set with every label: ``boxes`` (circle/square/triangle), ``mask`` (background + the three) and
    ``caption`` (two per image; the vocabulary comes from the training captions)."""

    num_images: Annotated[int, Range(ge=10)] = 2000  # images rendered
    max_objects: Annotated[int, Range(ge=1)] = 3  # objects per image (1..max_objects)
    min_freq: Annotated[int, Range(ge=1)] = 1  # words seen fewer times in training captions become <unk>

    targets = ("boxes", "mask", "caption")

    def target_classes(self) -> dict[str, tuple[str, ...] | None]:
        return {"boxes": SHAPE_CLASSES, "mask": ("background", *SHAPE_CLASSES), "caption": None}

    def setup(self) -> DataSplits:
        root = shapes_root(self.config(), self.cache_dir)
        where = str(root / "annotations.json")
        _, records = _coco_records(where, str(root), field_name="shapes", report=BoxReport(), check_files=False)
        coco = json.loads(Path(where).read_text())
        by_image: dict[int, list[str]] = {im["id"]: [] for im in coco["images"]}
        for c in coco["captions"]:
            by_image[c["image_id"]].append(c["caption"])
        captions = [_check_captions(r.image_id, by_image[r.image_id], where) for r in records]
        masks = [root / "masks" / Path(r.path).name for r in records]
        parts = dict(zip(_SPLITS, split_indices(len(records), val_fraction=self.val_fraction,
                                                test_fraction=self.test_fraction, seed=self.split_seed)))
        vocabulary = build_vocabulary([c for i in parts["train"] for c in captions[i]], min_freq=self.min_freq)

        def source(split: str) -> _ShapesSource:
            ix = parts[split]
            chosen: list[DetectionRecord] = [records[i] for i in ix]
            return _ShapesSource(DetectionSource(chosen, self.channels), [masks[i] for i in ix],
                                 CaptionSource([Path(r.path) for r in chosen], [captions[i] for i in ix], vocabulary,
                                               self.channels, per_caption=split == "train"))

        classes = {"boxes": SHAPE_CLASSES, "mask": ("background", *SHAPE_CLASSES), "caption": vocabulary}
        return DataSplits(classes=classes, **{split: source(split) for split in _SPLITS})


@dataclass
class ConcatSource:
    """Several sources' samples one after another."""

    sources: list[SampleSource]

    def __post_init__(self) -> None:
        self.starts = np.cumsum([0, *map(len, self.sources)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def load(self, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        part = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self.sources[part].load(index - int(self.starts[part]))


@spec
class MultiData(ImageData):
    """The splits of several adapters concatenated (train with train, val with val, test with test).

    Every sample keeps the targets its adapter gives it; targets it lacks count as missing (masked out of that
    head's loss and metrics). Adapters that share a target must agree on its classes. Image size, channels,
    normalisation and loader settings are this spec's own (the parts' are not used).
    """

    parts: tuple[Any, ...] = ()  # the dataset adapter specs to combine, at least two

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.parts) < 2:
            raise RecipeError("data.parts", f"needs at least two adapters to combine, got {len(self.parts)}")
        for i, part in enumerate(self.parts):
            if not hasattr(part, "setup") or not hasattr(part, "targets"):
                raise RecipeError(f"data.parts[{i}]", f"expected a dataset adapter spec, got {part!r}")
            if part.channels != self.channels:
                raise RecipeError(f"data.parts[{i}].channels", f"is {part.channels} but data.channels is "
                                                               f"{self.channels}; they must agree")

    @property
    def targets(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(dict.fromkeys(key for part in self.parts for key in part.targets))

    def target_classes(self) -> dict[str, tuple[str, ...] | None]:
        merged: dict[str, tuple[str, ...] | None] = {}
        for part in self.parts:
            for key, classes in part.target_classes().items():
                merged[key] = merged.get(key) or classes
        return merged

    def preflight(self) -> None:
        for part in self.parts:
            part.preflight()

    def setup(self) -> DataSplits:
        found = [part.setup() for part in self.parts]
        classes: dict[str, tuple[str, ...]] = {}
        for i, splits in enumerate(found):
            for key, names in splits.classes.items():
                if key in classes and classes[key] != tuple(names):
                    raise ZooError(f"data.parts[{i}] ({type(self.parts[i]).__name__}) has {key!r} classes "
                                   f"{list(names)[:10]}, an earlier part {list(classes[key])[:10]}; adapters that "
                                   f"share a target must name the same classes in the same order")
                classes[key] = tuple(names)
        return DataSplits(classes=classes, skipped=[s for splits in found for s in splits.skipped],
                          **{split: ConcatSource([getattr(s, split) for s in found]) for split in _SPLITS})
