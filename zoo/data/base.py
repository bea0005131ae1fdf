"""What every dataset adapter hands the engine: classes and three splits of loadable samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.recipe.spec import Range

__all__ = ["SampleSource", "DataSplits", "KeyedSource", "TransformedDataset", "ImageData", "stratified_split", "ArraySource"]


class SampleSource(Protocol):
    """Random access to ``(image uint8 [H, W, C], target)`` samples of one split."""

    def __len__(self) -> int: ...

    def load(self, index: int) -> tuple[np.ndarray, Any]: ...


@dataclass
class DataSplits:
    """The result of an adapter's ``setup``: class names per target key and the train/val/test samples.

    Sources yield ``(image, {target key: value})`` (keys: ``zoo.data.targets``). ``classes[key]`` names the classes
    of that target (the vocabulary of a caption target). ``skipped`` lists ``(file, reason)`` for inputs left out
    with a warning (undecodable images).
    """

    classes: dict[str, tuple[str, ...]]
    train: SampleSource
    val: SampleSource
    test: SampleSource
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @staticmethod
    def single(key: str, *, classes: Sequence[str], train: SampleSource, val: SampleSource, test: SampleSource,
               skipped: list[tuple[Path, str]] | None = None) -> DataSplits:
        """Splits of an adapter whose sources yield ``(image, value)`` of one target ``key``."""
        return DataSplits(classes={key: tuple(classes)}, train=KeyedSource(train, key), val=KeyedSource(val, key),
                          test=KeyedSource(test, key), skipped=list(skipped or []))


@dataclass
class KeyedSource:
    """A single-target source's samples as ``(image, {key: value})``."""

    source: SampleSource
    key: str

    def __len__(self) -> int:
        return len(self.source)

    def load(self, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        image, value = self.source.load(index)
        return image, {self.key: value}


@dataclass
class ArraySource:
    """Samples held in memory: ``images [N, H, W, C] uint8`` and one target per image."""

    images: np.ndarray
    targets: Sequence[Any]

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[np.ndarray, Any]:
        return self.images[index], self.targets[index]


class TransformedDataset(Dataset):
    """A split through its augmentation pipeline: ``(image [C, H, W] float, {key: target or None})``.

    ``prepare`` is a :class:`zoo.data.targets.SamplePreparer`: which targets go through the albumentations pipeline
    with the image (boxes, masks) and how each becomes a training target again.
    """

    def __init__(self, source: SampleSource, prepare: Callable[[np.ndarray, dict], tuple[torch.Tensor, dict]]) -> None:
        self.source, self.prepare = source, prepare

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, Any]]:
        """``item``: an index, or ``(index, seed)`` from a seeded sampler: the augmentation is seeded with ``seed``."""
        if isinstance(item, tuple):
            item, seed = item
            self.prepare.transform.reseed(seed)
        return self.prepare(*self.source.load(item))


@dataclass(frozen=True, kw_only=True)
class ImageData:
    """Fields every image dataset adapter has (the adapters are ``@spec`` subclasses)."""

    batch_size: Annotated[int, Range(ge=1)] = 32  # images per batch (per device)
    num_workers: Annotated[int, Range(ge=0)] = 2  # DataLoader worker processes (0: load in the main process)
    image_size: Annotated[int, Range(ge=8, le=8192)] = 224  # images are resized to image_size x image_size
    channels: Literal[1, 3] = 3  # 1 (grey) or 3 (RGB); images are converted on load
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # per-channel normalisation mean (0..1 scale)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)  # per-channel normalisation std

    targets = ("label",)  # what each sample carries next to its image

    def __post_init__(self) -> None:
        from zoo.errors import RecipeError

        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, self.channels):
                raise RecipeError(f"data.{name}", f"has {len(getattr(self, name))} values for "
                                                  f"{self.channels} channels")
        if any(s <= 0 for s in self.std):
            raise RecipeError("data.std", f"must be positive, got {self.std}")

    def static_classes(self) -> tuple[str, ...] | None:
        """Class names known without reading the data, or ``None``."""
        return None

    def target_classes(self) -> dict[str, tuple[str, ...] | None]:
        """Per target key, its class names if known without reading the data (``None`` if not)."""
        return {key: self.static_classes() for key in self.targets}

    def preflight(self) -> None:
        """Checks paths and settings that need the file system but not the data itself."""


def stratified_split(
    labels: Sequence[int], *, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted ``(train, val, test)`` indices of a seeded split that keeps each class's share in every part.

    Fractions are shares of all samples. The part sizes are scikit-learn's (``ceil`` of the share; val taken from
    what test leaves). A class of ``n`` samples gets ``floor(n * fraction)`` or one more in val and in test (the
    extra ones go to the largest remainders, ties broken by the seed), so each class is within 1 of its share. A
    class with at least 3 samples has at least one in every part whose fraction is > 0 and keeps at least one in
    train; a class with fewer than 3 samples only gets what its share rounds down to plus remainders (it may be
    wholly in train). With one class (adapters without labels pass all zeros) the split is scikit-learn's plain
    seeded ``train_test_split``, the same one as before stratification worked.
    """
    index = np.arange(len(labels))
    labels = np.asarray(labels, dtype=np.int64)
    if test_fraction + val_fraction == 0:
        return index, index[:0], index[:0]
    if len(np.unique(labels)) <= 1:
        return _plain_split(index, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    rng = np.random.RandomState(seed)
    counts = np.bincount(labels)
    n_test = int(np.ceil(len(index) * test_fraction))
    n_val = int(np.ceil((len(index) - n_test) * val_fraction / (1 - test_fraction))) if val_fraction else 0
    test_q = _class_quotas(counts, test_fraction, n_test, rng)
    val_q = np.minimum(_class_quotas(counts, val_fraction, n_val, rng), np.maximum(counts - test_q - 1, 0))
    parts: tuple[list, list, list] = ([], [], [])
    for label in np.flatnonzero(counts):
        members = rng.permutation(np.flatnonzero(labels == label))
        t, v = test_q[label], val_q[label]
        parts[2].append(members[:t])
        parts[1].append(members[t:t + v])
        parts[0].append(members[t + v:])
    return tuple(np.sort(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


def _class_quotas(counts: np.ndarray, fraction: float, total: int, rng: np.random.RandomState) -> np.ndarray:
    """Per class, how many of its ``counts`` go to a part holding ``fraction`` (about ``total`` in all)."""
    share = counts * fraction
    quota = np.floor(share).astype(np.int64)
    if fraction > 0:
        quota = np.where(counts >= 3, np.maximum(quota, 1), quota)  # every part sees every class of >= 3 samples
    bumped = quota > np.floor(share)
    left = total - int(quota.sum())
    if left > 0:  # largest remainders first; a class already raised to 1 is not raised again
        remainder = np.where(bumped | (quota >= counts - 1), -1.0, share - np.floor(share))
        order = np.lexsort((rng.random_sample(len(counts)), -remainder))
        quota[[c for c in order[:left] if remainder[c] > 0]] += 1
    return quota


def _plain_split(index: np.ndarray, *, val_fraction: float, test_fraction: float,
                 seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's seeded random split: test first, then val out of the rest."""
    from sklearn.model_selection import train_test_split

    rest, test = train_test_split(index, test_size=test_fraction, random_state=seed) \
        if test_fraction else (index, index[:0])
    if not val_fraction:
        return rest, rest[:0], np.sort(test)
    train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)
