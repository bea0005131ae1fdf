"""Image-folder datasets: one subfolder per class, split by folders or by a seeded stratified split.

Layouts::

    root/train/<class>/*.png, root/val/<class>/..., root/test/<class>/...   (val and test optional)
    root/<class>/*.png                                                       (split by val/test_fraction)

Every image is decoded once at setup (``verify_images``): undecodable files are skipped with a warning
that names them, and the count is reported. Source files are opened read-only and never modified.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np

from zoo.data.base import DataSplits, ImageData, stratified_split
from zoo.data.images import IMAGE_EXTENSIONS, load_image, scan_images
from zoo.errors import RecipeError, ZooError
from zoo.recipe.spec import Range, spec

__all__ = ["ImageFolderData", "FileSource", "list_class_folders"]

log = logging.getLogger(__name__)
_SPLITS = ("train", "val", "test")


@dataclass
class FileSource:
    """Samples on disk: ``files[i]`` with label ``labels[i]``, decoded on access."""

    files: list[Path]
    labels: list[int]
    channels: int

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[np.ndarray, int]:
        return load_image(self.files[index], channels=self.channels), self.labels[index]


def _empty_class(folder: Path, detail: str) -> ZooError:
    """The one error for a class folder without usable images (none there, or none decodable)."""
    return ZooError(f"class folder {folder} holds no images {detail}")


def list_class_folders(folder: Path, classes: tuple[str, ...] | None = None, *, follow_symlinks: bool = False
                       ) -> tuple[tuple[str, ...], list[Path], list[int]]:
    """Class names (sorted subfolder names, or ``classes``), image files and their labels.

    Raises:
        ZooError: no class folders, a class folder without images (named), or — unless ``follow_symlinks`` — a file
            or folder link that leads outside ``folder`` (named, with its target).
    """
    found = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not found:
        raise ZooError(f"{folder}: no class subfolders (expected {folder}/<class name>/<image files>)")
    if classes is not None and found != classes:
        raise ZooError(f"{folder}: class folders {list(found)} differ from the training split's {list(classes)}")
    files, labels = [], []
    for label, name in enumerate(found):
        images = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not follow_symlinks:
            _refuse_escaping_links(folder, images)
        if not images:
            raise _empty_class(folder / name, f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
        files += images
        labels += [label] * len(images)
    return found, files, labels


def _refuse_escaping_links(folder: Path, images: list[Path]) -> None:
    base = folder.resolve()
    for path in images:
        target = path.resolve()
        if not target.is_relative_to(base):
            raise ZooError(f"{path} leads outside the data folder {folder} (to {target}); links out of the data "
                           f"root are refused, as in COCO data. If the data is a folder of links on purpose, set "
                           f"data.follow_symlinks=True")


@spec
class ImageFolderData(ImageData):
    root: str | None = None  # dataset folder (see the layouts above); required
    val_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1  # without root/val: share of images for validation
    test_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1  # without root/test: share of images for testing
    split_seed: int = 0  # seeds the split, kept apart from the training seed so the test set stays fixed
    verify_images: bool = True  # decode every image at setup and skip the broken ones (with a warning)
    follow_symlinks: bool = False  # accept links that lead outside root (a folder of links to a shared image store)

    def preflight(self) -> None:
        if self.root is None:
            raise RecipeError("data.root", "is not set; pass data.root=PATH (a folder of class subfolders)")
        if not Path(self.root).expanduser().is_dir():
            raise RecipeError("data.root", f"folder {self.root!r} does not exist")

    def setup(self) -> DataSplits:
        self.preflight()
        root = Path(self.root).expanduser()
        if (root / "train").is_dir():
            classes, files, labels = list_class_folders(root / "train", follow_symlinks=self.follow_symlinks)
            parts = {"train": (files, labels)}
            for split in ("val", "test"):
                if (root / split).is_dir():
                    _, f, lab = list_class_folders(root / split, classes, follow_symlinks=self.follow_symlinks)
                    parts[split] = (f, lab)
            missing = [s for s in ("val", "test") if s not in parts]
            if missing:  # carve the missing splits out of train
                split = self._split(files, labels, val="val" in missing, test="test" in missing)
                parts.update({k: v for k, v in split.items() if k != "train" and k in missing})
                parts["train"] = split["train"]
        else:
            classes, files, labels = list_class_folders(root, follow_symlinks=self.follow_symlinks)
            parts = self._split(files, labels, val=True, test=True)
        skipped: list[tuple[Path, str]] = []
        if self.verify_images:
            for name, (files, labels) in parts.items():
                good, bad = scan_images(files, channels=self.channels)
                for path, reason in bad:
                    warnings.warn(f"skipping undecodable image {path}: {reason}", stacklevel=2)
                keep = set(good)
                parts[name] = ([f for f in files if f in keep], [lab for f, lab in zip(files, labels) if f in keep])
                skipped += bad
            if skipped:
                log.warning("skipped %d undecodable image(s) under %s", len(skipped), root)
            self._check_classes_decodable(root, classes, parts, skipped)
        for name, (files, _) in parts.items():
            if not files and name == "train":
                raise ZooError(f"{root}: the train split has no usable images")
        return DataSplits.single("label", classes=classes, skipped=skipped,
                          **{n: FileSource(list(f), list(lab), self.channels) for n, (f, lab) in parts.items()})

    @staticmethod
    def _check_classes_decodable(root: Path, classes: tuple[str, ...], parts: dict[str, tuple],
                                 skipped: list[tuple[Path, str]]) -> None:
        """A class whose files were all skipped is refused like an empty class folder (not a class of 0 samples)."""
        kept = {lab for _, labels in parts.values() for lab in labels}
        for label, name in enumerate(classes):
            if label not in kept:
                folder = (root / "train" if (root / "train").is_dir() else root) / name
                bad = sum(1 for path, _ in skipped if folder in path.parents)
                raise _empty_class(folder, f"that decode ({bad} undecodable file(s) skipped)")

    def _split(self, files: list[Path], labels: list[int], *, val: bool, test: bool) -> dict[str, tuple]:
        idx = stratified_split(labels, val_fraction=self.val_fraction if val else 0.0,
                               test_fraction=self.test_fraction if test else 0.0, seed=self.split_seed)
        return {name: ([files[i] for i in ix], [labels[i] for i in ix]) for name, ix in zip(_SPLITS, idx)}
