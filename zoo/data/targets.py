"""Typed targets: the one place that knows each kind of label a sample can carry next to its image.

A dataset adapter's sources yield ``(image uint8 [H, W, C], {target key: value})``; a key names a
:class:`TargetKind` below. Each kind says which albumentations inputs its value becomes (so boxes and masks
follow every geometric transform), which ``A.Compose`` arguments it needs, how the pipeline's output becomes the
training target again, and how a batch of them is collated. A head names the kind it learns from
(``Task.target``); the engine feeds it that key of the batch and nothing else.

A sample may lack a key (``None`` or absent): a mixed dataset labels different things in different images. Such a
sample contributes nothing to that head's loss and metrics (:class:`Labelled` keeps only the samples that have
the target, and their positions in the batch).

Kinds and their values:

- ``label``: an int class id → ``int64 []``; batches ``int64 [M]``.
- ``boxes``: ``{"boxes": float [K, 4] xyxy pixels, "labels": int [K], "image_id", "orig_size"}``; batches a list.
- ``mask``: ``uint8/int [H, W]`` class indices → ``int64 [H, W]``; batches ``int64 [M, H, W]``.
- ``caption``: ``{"tokens": [T] ids, "references": [[words]]}``; batches a ``CaptionBatch``.
- ``image``: the sample's own image (never stored): the clean pixels ``float [C, H, W]`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zoo.data.captions import PAD, CaptionBatch
from zoo.errors import UnknownNameError

__all__ = ["TargetKind", "TARGET_KINDS", "target_kind", "Labelled", "SamplePreparer", "collate_samples",
           "compose_kwargs_for"]


@dataclass(frozen=True)
class TargetKind:
    """How one kind of target travels from the adapter to the loss.

    Attributes:
        name: the key adapters use ("label", "boxes", ...).
        has_classes: whether the kind names classes (``DataSplits.classes[name]``); the image target has none.
        pipeline_inputs: ``value or None -> dict`` of extra albumentations inputs (``bboxes``, ``mask``).
        compose_kwargs: ``() -> dict`` of ``A.Compose`` arguments the inputs need (``bbox_params``).
        finish: ``(pipeline output, value) -> target`` after the pipeline ran (only for samples that have it).
        collate: ``list of targets -> batch value``.
    """

    name: str
    has_classes: bool
    finish: Callable[[dict, Any], Any]
    collate: Callable[[list], Any]
    pipeline_inputs: Callable[[Any], dict] | None = None
    compose_kwargs: Callable[[], dict] | None = None


# ---- the kinds -----------------------------------------------------------------------------------------------------

def _label(out: dict, value: Any) -> torch.Tensor:
    return torch.as_tensor(int(value), dtype=torch.int64)


def _box_inputs(value: dict | None) -> dict:
    """``bboxes`` (``pascal_voc`` = xyxy pixels) and ``labels``; an unlabelled sample passes none (the pipeline's
    ``bbox_params`` still need the fields)."""
    if value is None:
        return {"bboxes": np.zeros((0, 4), np.float32), "labels": np.zeros((0,), np.int64)}
    return {"bboxes": np.asarray(value["boxes"], np.float32).reshape(-1, 4),
            "labels": np.asarray(value["labels"], np.int64).reshape(-1)}


def _box_compose_kwargs() -> dict:
    """Boxes follow every geometric transform; boxes cropped to < 1 px² or to under 10 % of their area are dropped
    with their labels."""
    import albumentations as A

    return {"bbox_params": A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True, min_area=1.0,
                                        min_visibility=0.1)}


def _finish_boxes(out: dict, value: dict) -> dict:
    """The transformed boxes (float32 ``[K, 4]``), labels (int64 ``[K]``) and the model input's ``size``."""
    return {"boxes": torch.as_tensor(np.asarray(out["bboxes"], np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(out["labels"], np.int64).reshape(-1)),
            "image_id": int(value["image_id"]), "orig_size": tuple(value["orig_size"]),
            "size": tuple(out["image"].shape[-2:])}


def _mask_inputs(value: np.ndarray | None) -> dict:
    return {} if value is None else {"mask": value}  # nearest-neighbour resampling under every transform


def _finish_mask(out: dict, value: Any) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(out["mask"])).long()


def _finish_caption(out: dict, value: dict) -> dict:
    return value


def collate_captions(values: list[dict]) -> CaptionBatch:
    """``{"tokens", "references"}`` per sample → a :class:`CaptionBatch` of ``tokens [M, T]`` padded with ``<pad>``."""
    width = max(len(v["tokens"]) for v in values)
    tokens = torch.full((len(values), width), PAD, dtype=torch.int64)
    for i, v in enumerate(values):
        tokens[i, :len(v["tokens"])] = torch.as_tensor(v["tokens"])
    return CaptionBatch(tokens, [v["references"] for v in values])


def _finish_image(out: dict, value: Any) -> torch.Tensor:
    """The clean image the pipeline saw before any input-only noise, ``float [C, H, W]`` in [0, 1]."""
    pixels = out["pixels"]
    if pixels.dtype == np.uint8:
        clean = torch.from_numpy(np.ascontiguousarray(pixels)).float().div_(255)
    else:  # albumentations' float images are in [0, 1]
        clean = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
    if clean.ndim == 2:
        clean = clean[..., None]
    return clean.permute(2, 0, 1).contiguous()


TARGET_KINDS: dict[str, TargetKind] = {k.name: k for k in (
    TargetKind("label", True, _label, torch.stack),
    TargetKind("boxes", True, _finish_boxes, list, _box_inputs, _box_compose_kwargs),
    TargetKind("mask", True, _finish_mask, torch.stack, _mask_inputs),
    TargetKind("caption", True, _finish_caption, collate_captions),
    TargetKind("image", False, _finish_image, torch.stack),
)}


def target_kind(name: str) -> TargetKind:
    if name not in TARGET_KINDS:
        raise UnknownNameError("target kind", name, TARGET_KINDS)
    return TARGET_KINDS[name]


def compose_kwargs_for(keys: Sequence[str]) -> dict:
    """The ``A.Compose`` arguments of every kind in ``keys``, merged."""
    merged: dict = {}
    for key in keys:
        kind = target_kind(key)
        if kind.compose_kwargs is not None:
            merged.update(kind.compose_kwargs())
    return merged


# ---- samples and batches -------------------------------------------------------------------------------------------

@dataclass
class Labelled:
    """One target key over a batch: the collated ``value`` of the samples that have it, and their ``index [M]``
    (positions in the batch). A head sees only those samples."""

    value: Any
    index: torch.Tensor

    def to(self, device: Any, **kwargs: Any) -> Labelled:  # Lightning moves batches with .to
        value = self.value.to(device, **kwargs) if hasattr(self.value, "to") else self.value
        return Labelled(value, self.index.to(device, **kwargs))


class SamplePreparer:
    """``(image, {key: value})`` → ``(input [C, H, W], {key: target or None})`` through one pipeline.

    Args:
        transform: the recipe's :class:`zoo.recipe.parts.SamplePipeline` (``compose_kwargs_for(keys)`` inside).
        keys: the target keys the model's heads learn from; other keys a sample carries are ignored.
    """

    def __init__(self, transform: Callable[..., dict], keys: Sequence[str]) -> None:
        self.transform, self.kinds = transform, [target_kind(k) for k in dict.fromkeys(keys)]

    def __call__(self, image: np.ndarray, targets: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        inputs = {"image": image}
        for kind in self.kinds:
            if kind.pipeline_inputs is not None:
                inputs.update(kind.pipeline_inputs(targets.get(kind.name)))
        out = self.transform(**inputs)
        finished = {}
        for kind in self.kinds:
            value = targets.get(kind.name) if kind.name != "image" else image
            finished[kind.name] = None if value is None else kind.finish(out, value)
        return out["image"], finished


def collate_samples(samples: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[torch.Tensor, dict[str, Labelled]]:
    """``(images [N, C, H, W], {key: Labelled})``; a key no sample of the batch has is left out."""
    images = torch.stack([image for image, _ in samples])
    batch: dict[str, Labelled] = {}
    for key in samples[0][1]:
        present = [i for i, (_, t) in enumerate(samples) if t[key] is not None]
        if present:
            batch[key] = Labelled(target_kind(key).collate([samples[i][1][key] for i in present]),
                                  torch.as_tensor(present, dtype=torch.int64))
    return images, batch
