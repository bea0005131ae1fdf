"""Semantic segmentation data: images with a mask of class indices per pixel.

Every adapter here yields ``(image uint8 [H, W, C], mask uint8 [H, W])`` samples whose mask values are class
indices ``0..K-1`` (class 0 is "background") or :data:`IGNORE_INDEX` for pixels that count in no loss and no
metric. A dataset's own ignore value (``data.ignore_index``) is mapped to :data:`IGNORE_INDEX` when a mask is
read, so heads, losses and metrics only ever see that one value.

Mask folder layouts (``MaskFolderData``; a mask has its image's file stem and the ``.png`` suffix)::

    root/images/*.jpg|png...   root/masks/*.png                 (split by val/test_fraction)
    root/train/images, root/train/masks, root/val/..., root/test/...  (val and test optional)

COCO files (``CocoSegmentationData``) are read through :func:`zoo.data.coco.load_coco` (safe paths, checked ids)
and their polygons / RLE rasterised with pycocotools when a sample is loaded.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from PIL import Image, ImageOps
from pycocotools import mask as coco_mask

from zoo.data.base import DataSplits, ImageData, stratified_split
from zoo.data.coco import load_coco
from zoo.data.detection import CocoDetectionData
from zoo.data.images import IMAGE_EXTENSIONS, load_image
from zoo.data.shapes import SHAPE_CLASSES, shapes_root
from zoo.data.shapes_data import ShapesData
from zoo.errors import RecipeError, ZooError
from zoo.recipe.spec import Range, spec

__all__ = ["IGNORE_INDEX", "load_mask", "MaskSource", "CocoMaskSource", "ShapesSegmentationData",
           "MaskFolderData", "CocoSegmentationData", "pair_masks", "split_indices", "rasterise", "to_class_indices"]

log = logging.getLogger(__name__)
IGNORE_INDEX = 255  # the one ignore value inside the pipeline; so at most 255 classes
_SPLITS = ("train", "val", "test")
_INDEX_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")  # modes whose pixels are integers
_EXIF_ORIENTATION = 0x0112


def load_mask(path: str | Path) -> np.ndarray:
    """A mask file's class indices as ``int64 [H, W]`` (EXIF orientation applied, like :func:`load_image`).

    Palette (``P``) masks give their palette indices, grey and 16-bit masks their values. A colour mask whose
    channels all agree is read as grey; any other colour mask is refused (colours are not class indices).

    Raises:
        ZooError: the file cannot be decoded or holds colours; the message names it.
    """
    try:
        with open(path, "rb") as file, Image.open(file) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            values = np.asarray(image)
            mode = image.mode
    except (OSError, ValueError, SyntaxError) as error:
        raise ZooError(f"cannot read mask {str(path)!r}: {type(error).__name__}: {error}") from error
    if mode not in _INDEX_MODES:
        if values.ndim == 3 and (values[..., :3] == values[..., :1]).all() and mode in ("RGB", "RGBA", "LA"):
            values = values[..., 0]
        else:
            raise ZooError(f"mask {str(path)!r} is a {mode} colour image; masks hold one class index per pixel "
                           f"(save them as mode L, P or 16-bit grey PNGs)")
    return values.astype(np.int64)


def _header_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` as displayed (after EXIF rotation), from the file header only."""
    with Image.open(path) as image:
        w, h = image.size
        if image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
            w, h = h, w
    return h, w


def _check_sizes(image: Path, mask: Path, image_hw: tuple[int, int], mask_hw: tuple[int, int]) -> None:
    if tuple(image_hw) != tuple(mask_hw):
        raise ZooError(f"mask {str(mask)!r} is {mask_hw[0]}x{mask_hw[1]} (HxW) but its image {str(image)!r} is "
                       f"{image_hw[0]}x{image_hw[1]}; a mask must have its image's size")


@dataclass
class MaskSource:
    """Image and mask files, decoded on access into ``(image uint8 [H, W, C], mask uint8 [H, W])``.

    Attributes:
        images / masks: paired files.
        channels: image channels (1 or 3).
        num_classes: valid mask values are ``0..num_classes-1``; others (except ``ignore_index``) raise.
        ignore_index: the file's "ignore" value, mapped to :data:`IGNORE_INDEX`.
    """

    images: list[Path]
    masks: list[Path]
    channels: int
    num_classes: int
    ignore_index: int = IGNORE_INDEX

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = load_image(self.images[index], channels=self.channels)
        mask = load_mask(self.masks[index])
        _check_sizes(self.images[index], self.masks[index], image.shape[:2], mask.shape)
        return image, to_class_indices(mask, num_classes=self.num_classes, ignore_index=self.ignore_index,
                                       where=self.masks[index])


def to_class_indices(mask: np.ndarray, *, num_classes: int, ignore_index: int, where: Path | str) -> np.ndarray:
    """A mask's values as ``uint8`` class indices with ``ignore_index`` → :data:`IGNORE_INDEX`.

    Raises:
        ZooError: values outside ``0..num_classes-1`` that are not ``ignore_index``; names the file and values.
    """
    ignored = mask == ignore_index
    bad = (mask < 0) | (mask >= num_classes)
    bad &= ~ignored
    if bad.any():
        raise ZooError(f"mask {str(where)!r} holds values {np.unique(mask[bad])[:10].tolist()} outside the "
                       f"{num_classes} classes 0..{num_classes - 1} (and not data.ignore_index={ignore_index})")
    out = mask.astype(np.uint8)
    out[ignored] = IGNORE_INDEX
    return out


def split_indices(n: int, *, val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """A seeded random train/val/test split of ``n`` samples (indices, each sorted)."""
    return stratified_split(np.zeros(n, np.int64), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)


def pair_masks(image_dir: Path, mask_dir: Path) -> tuple[list[Path], list[Path]]:
    """Every image in ``image_dir`` with its mask ``mask_dir/<stem>.png``.

    Raises:
        ZooError: a folder is missing or empty, or an image has no mask (the first few are named).
    """
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise ZooError(f"{folder}: no such folder (expected {image_dir.parent}/images/ and "
                           f"{image_dir.parent}/masks/)")
    images = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise ZooError(f"{image_dir} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    masks = [mask_dir / p.relative_to(image_dir).with_suffix(".png") for p in images]
    missing = [str(i) for i, m in zip(images, masks) if not m.is_file()]
    if missing:
        raise ZooError(f"{len(missing)} image(s) have no mask in {mask_dir} (a mask is <image stem>.png), "
                       f"e.g. {missing[:3]}")
    orphans = len(list(mask_dir.rglob("*.png"))) - len(masks)
    if orphans > 0:
        warnings.warn(f"{orphans} mask(s) in {mask_dir} have no image and are not used", stacklevel=2)
    return images, masks


@spec
class ShapesSegmentationData(ShapesData):
    """The embedded shapes set (``zoo.data.shapes``) with its masks: background, circle, square, triangle."""

    num_images: Annotated[int, Range(ge=10)] = 1000  # images rendered
    max_objects: Annotated[int, Range(ge=1)] = 3  # objects per image (1..max_objects)

    targets = ("mask",)

    def static_classes(self) -> tuple[str, ...]:
        return ("background", *SHAPE_CLASSES)

    def setup(self) -> DataSplits:
        root = shapes_root(self.config(), self.cache_dir)
        images, masks = pair_masks(root / "images", root / "masks")  # mask value = class id + 1, 0 = background
        parts = split_indices(len(images), val_fraction=self.val_fraction, test_fraction=self.test_fraction,
                              seed=self.split_seed)
        classes = self.static_classes()
        return DataSplits.single("mask", classes=classes, **{
            name: MaskSource([images[i] for i in ix], [masks[i] for i in ix], self.channels, len(classes))
            for name, ix in zip(_SPLITS, parts)})


@spec
class MaskFolderData(ImageData):
    """Images with PNG masks of class indices, in the layouts of the module docstring."""

    root: str | None = None  # dataset folder: images/ + masks/, or train/ val/ test/ each holding both; required
    classes: tuple[str, ...] | None = None  # names of mask values 0..K-1 (0 first: background); None: numbered
    ignore_index: Annotated[int, Range(ge=0, le=65535)] = 255  # mask value excluded from loss and metrics
    val_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1  # without root/val: share of images for validation
    test_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1  # without root/test: share of images for testing
    split_seed: int = 0  # seeds the split, kept apart from the training seed so the test set stays fixed

    targets = ("mask",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.classes is not None and not 1 <= len(self.classes) <= IGNORE_INDEX:
            raise RecipeError("data.classes", f"has {len(self.classes)} names; give 1..{IGNORE_INDEX}")

    def static_classes(self) -> tuple[str, ...] | None:
        return self.classes

    def preflight(self) -> None:
        if self.root is None:
            raise RecipeError("data.root", "is not set; pass data.root=PATH (a folder with images/ and masks/)")
        if not Path(self.root).expanduser().is_dir():
            raise RecipeError("data.root", f"folder {self.root!r} does not exist")

    def setup(self) -> DataSplits:
        self.preflight()
        root = Path(self.root).expanduser()
        if (root / "train").is_dir():
            parts = {s: pair_masks(root / s / "images", root / s / "masks") for s in _SPLITS if (root / s).is_dir()}
            missing = [s for s in ("val", "test") if s not in parts]
            if missing:  # carve the missing splits out of train
                images, masks = parts["train"]
                ix = split_indices(len(images), val_fraction=self.val_fraction if "val" in missing else 0.0,
                                   test_fraction=self.test_fraction if "test" in missing else 0.0,
                                   seed=self.split_seed)
                for name, idx in zip(_SPLITS, ix):
                    if name == "train" or name in missing:
                        parts[name] = ([images[i] for i in idx], [masks[i] for i in idx])
        else:
            images, masks = pair_masks(root / "images", root / "masks")
            ix = split_indices(len(images), val_fraction=self.val_fraction, test_fraction=self.test_fraction,
                               seed=self.split_seed)
            parts = {name: ([images[i] for i in idx], [masks[i] for i in idx]) for name, idx in zip(_SPLITS, ix)}
        classes = self.classes or self._numbered_classes([m for _, ms in parts.values() for m in ms])
        for images, masks in parts.values():
            for image, mask in zip(images, masks):
                _check_sizes(image, mask, _header_size(image), _header_size(mask))
        return DataSplits.single("mask", classes=tuple(classes), **{
            name: MaskSource(list(images), list(masks), self.channels, len(classes), self.ignore_index)
            for name, (images, masks) in parts.items()})

    def _numbered_classes(self, masks: Sequence[Path]) -> tuple[str, ...]:
        """Without ``data.classes``: read every mask once for its largest value; 0 is "background"."""
        top = 0
        for path in masks:
            values = load_mask(path)
            values = values[values != self.ignore_index]
            top = max(top, int(values.max(initial=0)))
        if top >= IGNORE_INDEX:
            raise ZooError(f"masks under {self.root} hold class index {top}; at most {IGNORE_INDEX} classes "
                           f"(0..{IGNORE_INDEX - 1}) are supported")
        log.info("data.classes not set: %d numbered classes from the masks", top + 1)
        return ("background", *(str(i) for i in range(1, top + 1)))


@dataclass
class CocoMaskSource:
    """COCO images whose masks are rasterised on access from their polygon / RLE ``segmentation`` entries.

    Attributes:
        images: the image files.
        sizes: ``(H, W)`` per image as the JSON states it (``(0, 0)``: take the decoded image's size).
        objects: per image, ``(segmentation, class index, iscrowd)`` in file order; later objects are painted over
            earlier ones, crowd regions become :data:`IGNORE_INDEX` (as in COCO's own semantic-segmentation tools).
        channels: image channels (1 or 3).
        where: per image, what to name in errors (``"annotations.json, image id 7"``).
    """

    images: list[Path]
    sizes: list[tuple[int, int]]
    objects: list[list[tuple[Any, int, bool]]]
    channels: int
    where: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = load_image(self.images[index], channels=self.channels)
        h, w = self.sizes[index] if all(self.sizes[index]) else image.shape[:2]
        if (h, w) != tuple(image.shape[:2]):
            raise ZooError(f"{self.where[index]}: the JSON gives height x width {h}x{w} but the image file "
                           f"{str(self.images[index])!r} is {image.shape[0]}x{image.shape[1]}; masks are drawn "
                           f"at the JSON's size, so the two must agree")
        mask = np.zeros((h, w), np.uint8)
        for segmentation, label, crowd in self.objects[index]:
            bits = rasterise(segmentation, h, w, where=self.where[index])
            mask[bits] = IGNORE_INDEX if crowd else label
        return image, mask


def rasterise(segmentation: Any, height: int, width: int, *, where: str) -> np.ndarray:
    """One COCO ``segmentation`` (polygon list, uncompressed or compressed RLE) as a ``bool [H, W]`` mask.

    The same steps as ``pycocotools.coco.COCO.annToMask``, without needing the ``COCO`` index in each worker.

    Raises:
        ZooError: the entry is malformed, or an RLE's size differs from the image's; names ``where``.
    """
    try:
        if isinstance(segmentation, list):  # polygons [[x1, y1, x2, y2, ...], ...]
            rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            rle = coco_mask.frPyObjects(segmentation, height, width)  # uncompressed RLE
        elif isinstance(segmentation, dict):
            rle = dict(segmentation)
            if isinstance(rle.get("counts"), str):
                rle["counts"] = rle["counts"].encode("ascii")
        else:
            raise TypeError(f"expected polygons or an RLE dict, got {type(segmentation).__name__}")
        if tuple(rle["size"]) != (height, width):
            raise ValueError(f"RLE size {list(rle['size'])} differs from the image's {[height, width]}")
        return coco_mask.decode(rle).astype(bool)
    except (TypeError, ValueError, KeyError, IndexError) as error:
        raise ZooError(f"{where}: cannot rasterise its segmentation: {type(error).__name__}: {error}") from error


def _coco_mask_source(json_path: str, images_root: str, *, field_name: str, channels: int
                      ) -> tuple[tuple[str, ...], CocoMaskSource]:
    data = load_coco(json_path, images_root, field=field_name)
    images, sizes, objects, where, without = [], [], [], [], 0
    for image in data.images:
        anns = data.annotations(image.id)
        without += sum("segmentation" not in a for a in anns)
        images.append(image.path)
        sizes.append((image.height, image.width))
        objects.append([(a["segmentation"], data.label_of[a["category_id"]] + 1, bool(a.get("iscrowd")))
                        for a in anns if "segmentation" in a])
        where.append(f"{data.json_path} ({field_name}), image id {image.id}")
    if without:
        warnings.warn(f"{json_path}: {without} annotation(s) have no 'segmentation' and are not drawn into the "
                      "masks", stacklevel=3)
    if "background" in data.classes:
        raise RecipeError(field_name, f"{json_path} has a category named 'background'; mask value 0 is the "
                                      "background already, rename that category")
    return ("background", *data.classes), CocoMaskSource(images, sizes, objects, channels, where)


@spec
class CocoSegmentationData(ImageData):
    """COCO instance annotations (polygons or RLE) as semantic masks: value 0 background, category ``i`` → ``i + 1``.

    Categories sorted by id give classes 1..K; crowd regions are ignored (:data:`IGNORE_INDEX`); where objects
    overlap, the later annotation in the file wins.
    """

    images: str | None = None  # the folder that image file_names in the JSON files are relative to; required
    train_json: str | None = None  # COCO file (polygons/RLE) of the training images; required
    val_json: str | None = None  # COCO file of the validation images; required
    test_json: str | None = None  # COCO file of the test images (None: the validation split is also the test split)
    image_size: Annotated[int, Range(ge=8, le=8192)] = 256  # model input side

    targets = ("mask",)

    def preflight(self) -> None:
        CocoDetectionData.preflight(self)  # the same four path fields, the same checks and messages

    def setup(self) -> DataSplits:
        self.preflight()
        parts, classes = {}, None
        for split in ("train", "val", "test") if self.test_json else ("train", "val"):
            name = f"{split}_json"
            found, parts[split] = _coco_mask_source(getattr(self, name), self.images, field_name=f"data.{name}",
                                                    channels=self.channels)
            if classes is not None and found != classes:
                raise RecipeError(f"data.{name}", f"{getattr(self, name)} has categories {list(found[1:])}, "
                                                  f"data.train_json has {list(classes[1:])}; every split needs "
                                                  "the same categories")
            classes = found
        if len(classes) < 2:
            raise RecipeError("data.train_json", f"{self.train_json} has no 'categories'")
        parts.setdefault("test", parts["val"])
        return DataSplits.single("mask", classes=classes, **parts)
