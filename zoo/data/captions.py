"""Image captioning data: a tokenizer, a vocabulary built from training captions, and two adapters.

The vocabulary is the run's ``classes``: token strings whose index is the token id (``<pad>`` = 0, ``<bos>``,
``<eos>``, ``<unk>``, then the training words by falling frequency), so it is saved inside every checkpoint.

Each sample's target is a dict ``{"tokens": [<bos>, w1, ..., <eos>] ids, "references": [[word, ...], ...]}``:
``tokens`` is the caption trained on, ``references`` every caption of the image as tokenized words (unseen words
kept as they are, so the metrics score against the true text). A training split holds one sample per
(image, caption) pair; val/test splits hold one sample per image, trained-on caption = its first.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch

from zoo.data.base import DataSplits, ImageData
from zoo.data.images import load_image
from zoo.data.shapes import shapes_root
from zoo.data.shapes_data import ShapesData
from zoo.errors import RecipeError, ZooError
from zoo.recipe.spec import Range, spec

__all__ = ["PAD", "BOS", "EOS", "UNK", "SPECIAL_TOKENS", "tokenize", "build_vocabulary", "encode", "decode",
           "CaptionBatch", "CaptionSource", "ShapesCaptionData", "CocoCaptionData", "read_coco_captions"]

PAD, BOS, EOS, UNK = 0, 1, 2, 3  # ids of the special tokens
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
_TOKEN = re.compile(r"\w+|[^\w\s]")  # runs of letters/digits, or one punctuation mark


def tokenize(text: str) -> list[str]:
    """Lower-cased words, each punctuation mark a token of its own: ``"A dog, running."`` → a dog , running ."""
    return _TOKEN.findall(text.lower())


def build_vocabulary(captions: Iterable[str], *, min_freq: int = 1) -> tuple[str, ...]:
    """The special tokens, then every word seen at least ``min_freq`` times, most frequent first (ties: a→z)."""
    counts = Counter(word for caption in captions for word in tokenize(caption))
    words = sorted((w for w, c in counts.items() if c >= min_freq and w not in SPECIAL_TOKENS),
                   key=lambda w: (-counts[w], w))
    return SPECIAL_TOKENS + tuple(words)


def encode(text: str | Sequence[str], index: dict[str, int]) -> list[int]:
    """``[<bos>, ids..., <eos>]`` of a caption (text or its tokens); words not in ``index`` become ``<unk>``."""
    words = tokenize(text) if isinstance(text, str) else text
    return [BOS, *(index.get(w, UNK) for w in words), EOS]


def decode(ids: Iterable[int], vocabulary: Sequence[str]) -> list[str]:
    """Words of a token id sequence: stops at ``<eos>``, skips ``<pad>``/``<bos>``, keeps ``<unk>`` as a word."""
    words = []
    for i in ids:
        i = int(i)
        if i == EOS:
            break
        if i not in (PAD, BOS):
            words.append(vocabulary[i] if 0 <= i < len(vocabulary) else SPECIAL_TOKENS[UNK])
    return words


@dataclass
class CaptionBatch:
    """The targets of a batch: padded ``tokens [N, T]`` and every image's reference captions (word lists)."""

    tokens: torch.Tensor
    references: list[list[list[str]]]

    def __len__(self) -> int:
        return len(self.references)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):  # the evaluation grid takes the first images of a batch
            return CaptionBatch(self.tokens[index], self.references[index])
        return self.references[index]

    def __iter__(self):
        return iter(self.references)

    def to(self, device: Any, **kwargs: Any) -> CaptionBatch:  # Lightning moves batches with .to
        return CaptionBatch(self.tokens.to(device, **kwargs), self.references)


@dataclass
class CaptionSource:
    """Images (files) and their captions; ``per_caption`` makes one sample per (image, caption) pair."""

    files: list[Path]
    captions: list[list[str]]  # every caption of each image, non-empty
    vocabulary: tuple[str, ...]
    channels: int = 3
    per_caption: bool = False

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.vocabulary)}
        self.samples = [(i, j) for i, caps in enumerate(self.captions)
                        for j in (range(len(caps)) if self.per_caption else range(1))]

    def __len__(self) -> int:
        return len(self.samples)

    def target(self, i: int, j: int) -> dict[str, Any]:
        """Image ``i``'s caption ``j`` as the trained-on ``tokens``, with every caption of the image as references."""
        references = [tokenize(c) for c in self.captions[i]]
        return {"tokens": encode(references[j], self.index), "references": references}

    def load(self, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        i, j = self.samples[index]
        return load_image(self.files[i], channels=self.channels), self.target(i, j)


def truncate_captions(captions: list[list[str]], *, max_words: int, where: str) -> list[list[str]]:
    """Each caption cut to its first ``max_words`` tokens (a 10,000-word caption would exhaust memory in a batch).

    Truncated captions are counted in one warning naming ``where``, the cap and the longest length seen.
    """
    lengths = [len(tokenize(c)) for caps in captions for c in caps]
    long = [n for n in lengths if n > max_words]
    if not long:
        return captions
    warnings.warn(f"{where}: truncated {len(long)} caption(s) longer than data.max_words={max_words} tokens "
                  f"(longest: {max(long)} tokens)", stacklevel=3)
    return [[c if len(tokenize(c)) <= max_words else " ".join(tokenize(c)[:max_words]) for c in caps]
            for caps in captions]


def _split_sources(files: list[Path], captions: list[list[str]], parts: dict[str, np.ndarray], *, min_freq: int,
                   channels: int) -> DataSplits:
    """Splits of the images named by index arrays ``parts["train"|"val"|"test"]``; vocabulary from train only."""
    train_captions = [c for i in parts["train"] for c in captions[i]]
    vocabulary = build_vocabulary(train_captions, min_freq=min_freq)

    def source(split: str) -> CaptionSource:
        idx = parts[split]
        return CaptionSource([files[i] for i in idx], [captions[i] for i in idx], vocabulary, channels,
                             per_caption=split == "train")

    return DataSplits.single("caption", classes=vocabulary, train=source("train"), val=source("val"),
                             test=source("test"))


def _check_captions(image_id: Any, texts: list[Any], where: str) -> list[str]:
    if not texts:
        raise ZooError(f"{where}: image id {image_id!r} has no captions; every image needs at least one")
    for text in texts:
        if not isinstance(text, str) or not tokenize(text):
            raise ZooError(f"{where}: image id {image_id!r} has an empty or missing caption ({text!r})")
    return texts


@spec
class ShapesCaptionData(ShapesData):
    """The embedded shapes set with its ``annotations.json`` captions (two per image).

    One object per image (the default) gives "a small red circle in the top left"; ``max_objects=2`` gives
    relations ("a small red circle above a large blue square"); three or more give lists of objects.
    """

    min_freq: Annotated[int, Range(ge=1)] = 1  # words seen fewer times in training captions become <unk>

    targets = ("caption",)

    def static_classes(self) -> None:
        return None  # the vocabulary comes from the training captions

    def setup(self) -> DataSplits:
        from sklearn.model_selection import train_test_split

        root = shapes_root(self.config(), self.cache_dir)
        where = str(root / "annotations.json")
        coco = json.loads((root / "annotations.json").read_text())
        by_image: dict[int, list[str]] = {im["id"]: [] for im in coco["images"]}
        for c in coco["captions"]:
            by_image[c["image_id"]].append(c["caption"])
        ids = sorted(by_image)
        files = [root / "images" / f"{i:05d}.png" for i in ids]
        captions = [_check_captions(i, by_image[i], where) for i in ids]
        index = np.arange(len(ids))
        rest, test = train_test_split(index, test_size=self.test_fraction, random_state=self.split_seed) \
            if self.test_fraction else (index, index[:0])
        train, val = train_test_split(rest, test_size=self.val_fraction / (1 - self.test_fraction),
                                      random_state=self.split_seed) if self.val_fraction else (rest, rest[:0])
        parts = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
        return _split_sources(files, captions, parts, min_freq=self.min_freq, channels=self.channels)


def read_coco_captions(json_path: str | Path, images_root: str | Path, *,
                       field: str = "data.train_json") -> tuple[list[Path], list[list[str]]]:
    """Image files and their captions from a COCO captions file (``images`` + ``annotations`` with ``caption``).

    ``file_name`` is resolved under ``images_root`` and must stay inside it; a missing image file, an image
    without captions or an empty caption is an error naming the file, ``field`` and the image id.
    """
    json_path, images_root = Path(json_path), Path(images_root)
    try:
        coco = json.loads(json_path.read_text())
    except (OSError, ValueError) as error:
        raise RecipeError(field, f"cannot read COCO captions file {str(json_path)!r}: {error}") from error
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list) \
            or not isinstance(coco.get("annotations"), list):
        raise RecipeError(field, f"{json_path}: expected a COCO object with 'images' and 'annotations' lists")
    root = images_root.resolve()
    by_image: dict[Any, list[Any]] = {}
    names: dict[Any, str] = {}
    for im in coco["images"]:
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise RecipeError(field, f"{json_path}: image entry {im!r} needs an 'id' and a 'file_name'")
        if im["id"] in names:  # a second entry would silently take the first one's captions
            raise RecipeError(field, f"{json_path}: image id {im['id']!r} appears twice in 'images' (file_name "
                                     f"{names[im['id']]!r} and {im['file_name']!r})")
        names[im["id"]] = im["file_name"]
        by_image[im["id"]] = []
    for ann in coco["annotations"]:
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if image_id not in by_image:
            raise RecipeError(field, f"{json_path}: caption annotation {ann!r} names no listed image id")
        by_image[image_id].append(ann.get("caption"))
    files, captions = [], []
    for image_id, name in names.items():
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            raise RecipeError(field, f"{json_path}: image id {image_id!r} file_name {name!r} points outside "
                                     f"data.images ({root})")
        if not path.is_file():
            raise RecipeError(field, f"{json_path}: image id {image_id!r}: file {str(path)!r} does not exist")
        files.append(path)
        captions.append(_check_captions(image_id, by_image[image_id], f"{json_path} ({field})"))
    if not files:
        raise RecipeError(field, f"{json_path}: lists no images")
    return files, captions


@spec
class CocoCaptionData(ImageData):
    """Your images folder and COCO captions JSON files (several captions per image), e.g. captions_train2017.json."""

    images: str  # folder that the JSON files' image file_name entries are relative to
    train_json: str  # COCO captions file of the training images (builds the vocabulary)
    val_json: str  # COCO captions file of the validation images
    test_json: str | None = None  # COCO captions file of the test images (None: the validation images)
    min_freq: Annotated[int, Range(ge=1)] = 5  # words seen fewer times in training captions become <unk>
    max_words: Annotated[int, Range(ge=1)] = 64  # longer captions are cut to this many tokens (counted warning)

    targets = ("caption",)

    def preflight(self) -> None:
        if not Path(self.images).is_dir():
            raise RecipeError("data.images", f"{self.images!r} is not a folder")
        for name in ("train_json", "val_json", "test_json"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise RecipeError(f"data.{name}", f"{value!r} is not a file")

    def setup(self) -> DataSplits:
        files: list[Path] = []
        captions: list[list[str]] = []
        parts: dict[str, np.ndarray] = {}
        for split in ("train", "val", "test"):
            path = getattr(self, f"{split}_json") or self.val_json
            f, c = read_coco_captions(path, self.images, field=f"data.{split}_json")
            parts[split] = np.arange(len(files), len(files) + len(f))
            files += f
            captions += truncate_captions(c, max_words=self.max_words, where=f"{path} (data.{split}_json)")
        return _split_sources(files, captions, parts, min_freq=self.min_freq, channels=self.channels)
