"""Synthetic "shapes" dataset: coloured circles, squares and triangles on a noisy dark background.

Rendered to disk once (deterministically, from ``numpy.random.default_rng(config.seed)``), every image carries labels
for every task. Layout of the dataset root::

    images/00001.png             RGB, image_size x image_size
    masks/00001.png              mode "L": class id + 1 per pixel, 0 = background; later objects occlude earlier ones
    classes/<class>/00001.png    image-folder view, labelled by the largest visible object (hard link or copy)
    annotations.json             COCO: images, categories (id = class id + 1), annotations, captions
    meta.json                    {"format_version": 1, "config": {...}}

Boxes in ``annotations.json`` are COCO ``[x, y, w, h]`` floats in absolute pixels (pixel edges: a box starting at
pixel column 3 with w=10 covers columns 3..12). Segmentations are the shape outlines before occlusion; ``area`` is
the visible pixel count.

Placement: objects lie fully inside the image; a placement is rejected (and re-drawn from the same RNG, a bounded
number of times) if its box has IoU > 0.3 with an earlier box, or if it would leave an earlier object with less
than half of its pixels visible — so no annotation is invisible. The class-folder label is the object with the most
visible pixels (the first drawn among equals).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SHAPE_CLASSES", "COLORS", "ShapesConfig", "render_shapes", "shapes_root"]

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 80, 240),
    "yellow": (240, 220, 30),
}
FORMAT_VERSION = 1

_MAX_IOU = 0.3  # placements whose box overlaps an earlier box by more than this are rejected
_MIN_VISIBLE = 0.5  # ...and so are placements that would hide more than half of an earlier object
_PLACEMENT_TRIES = 100  # per object; bounded so a crowded config fails instead of looping
_BACKGROUND_GREY = 40
_CIRCLE_VERTICES = 32  # polygon vertices approximating a circle in the COCO segmentation
# 3x3 grid of position words for one-object captions, indexed [row][column]; corners read "in the top left".
_POSITIONS = (
    ("in the top left", "at the top", "in the top right"),
    ("on the left", "in the centre", "on the right"),
    ("in the bottom left", "at the bottom", "in the bottom right"),
)


@dataclass(frozen=True, kw_only=True)
class ShapesConfig:
    """What to render; the same config always gives byte-identical files."""

    num_images: int = 600  # images in the dataset, ids 1..num_images
    image_size: int = 64  # side of the square images, pixels
    min_objects: int = 1  # objects per image, drawn uniformly from min_objects..max_objects
    max_objects: int = 1  # 1 -> one object per image (classification/localization); >1 -> detection
    min_size: int = 12  # object size (bounding-box side) range in pixels, inclusive
    max_size: int = 32  # largest object side in pixels
    seed: int = 0  # seed of numpy.random.default_rng; everything random comes from it
    background_noise: float = 8.0  # std of gaussian pixel noise added to a dark-grey background

    def __post_init__(self) -> None:
        checks = (
            ("num_images", self.num_images >= 1, ">= 1"),
            ("image_size", self.image_size >= 8, ">= 8"),
            ("min_objects", self.min_objects >= 1, ">= 1"),
            ("max_objects", self.max_objects >= self.min_objects, f">= min_objects ({self.min_objects})"),
            ("min_size", self.min_size >= 3, ">= 3"),
            ("max_size", self.min_size <= self.max_size <= self.image_size,
             f"between min_size ({self.min_size}) and image_size ({self.image_size})"),
            ("background_noise", self.background_noise >= 0, ">= 0"),
        )
        for name, ok, requirement in checks:
            if not ok:
                raise ValueError(f"ShapesConfig.{name} must be {requirement}, got {getattr(self, name)!r}")


def render_shapes(config: ShapesConfig, root: str | os.PathLike) -> Path:
    """Render the dataset described by ``config`` into ``root`` (see the module docstring for the layout).

    Rendering goes to a sibling temp dir ``<root>.tmp-<pid>`` that is renamed into place, so ``root`` is either
    absent (or empty) or complete. If ``root`` already holds a dataset with the same config, it is returned
    untouched.

    Args:
        config: what to render.
        root: dataset directory to create.

    Returns:
        ``root`` as a ``Path``.

    Raises:
        FileExistsError: ``root`` exists but its ``meta.json`` is missing or describes another config.
        ValueError: objects could not be placed (config too crowded for the overlap limits).
    """
    root = Path(root)
    if root.exists() and not (root.is_dir() and not any(root.iterdir())):  # an empty directory is replaced
        _check_existing(root, config)
        return root
    tmp = root.parent / f"{root.name}.tmp-{os.getpid()}"
    if tmp.exists():  # left over by a crashed run that had our pid
        shutil.rmtree(tmp)
    try:
        _render_into(config, tmp)
        try:
            os.replace(tmp, root)
        except OSError:
            if not root.exists():
                raise
            _check_existing(root, config)  # another process finished the same dataset first
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return root


def shapes_root(config: ShapesConfig, cache_dir: str | os.PathLike | None = None) -> Path:
    """Dataset directory for ``config`` in the cache, rendering it on first use.

    Args:
        config: what to render.
        cache_dir: cache directory; default ``$ZOO_CACHE`` or ``~/.cache/zoo``.

    Returns:
        ``<cache_dir>/shapes-<12 hex digits of the config's hash>``, fully rendered.
    """
    cache = Path(cache_dir or os.environ.get("ZOO_CACHE", "~/.cache/zoo")).expanduser()
    digest = hashlib.sha256(json.dumps(_meta(config), sort_keys=True).encode()).hexdigest()[:12]
    return render_shapes(config, cache / f"shapes-{digest}")


def _meta(config: ShapesConfig) -> dict:
    return {"format_version": FORMAT_VERSION, "config": dataclasses.asdict(config)}


def _check_existing(root: Path, config: ShapesConfig) -> None:
    meta_path = root / "meta.json"
    try:
        found = json.loads(meta_path.read_text())
    except (OSError, ValueError) as error:
        raise FileExistsError(f"{str(root)!r} exists but is not a shapes dataset ({meta_path}: {error})") from error
    if found != _meta(config):
        raise FileExistsError(
            f"{str(root)!r} holds a shapes dataset rendered from another config: {meta_path} has {found!r}, "
            f"wanted {_meta(config)!r}; pick another root or delete it"
        )


def _render_into(config: ShapesConfig, out: Path) -> None:
    """Render every image, mask and label file into the (new) directory ``out``."""
    rng = np.random.default_rng(config.seed)
    for sub in ["images", "masks", *(f"classes/{name}" for name in SHAPE_CLASSES)]:
        (out / sub).mkdir(parents=True)
    images, annotations, captions = [], [], []
    for image_id in range(1, config.num_images + 1):
        name = f"{image_id:05d}.png"
        pixels, mask, shapes = _render_image(config, rng)
        Image.fromarray(pixels).save(out / "images" / name)
        Image.fromarray(mask).save(out / "masks" / name)
        areas = [int(np.count_nonzero(s.visible)) for s in shapes]
        largest = shapes[int(np.argmax(areas))]
        _link_or_copy(out / "images" / name, out / "classes" / SHAPE_CLASSES[largest.class_id] / name)

        images.append({"id": image_id, "file_name": f"images/{name}", "width": config.image_size,
                       "height": config.image_size})
        for shape, area in zip(shapes, areas):
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": shape.class_id + 1,
                "bbox": [float(v) for v in shape.box], "area": float(area), "iscrowd": 0,
                "segmentation": [_outline(shape)], "color": shape.color,
            })
        for text in _captions(shapes, config=config):
            captions.append({"image_id": image_id, "id": len(captions) + 1, "caption": text})

    coco = {
        "info": {"description": "zoo synthetic shapes", "version": str(FORMAT_VERSION)},
        "licenses": [],
        "images": images,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPE_CLASSES)],
        "annotations": annotations,
        "captions": captions,
    }
    (out / "annotations.json").write_text(json.dumps(coco))
    (out / "meta.json").write_text(json.dumps(_meta(config), indent=2, sort_keys=True))


@dataclass
class _Shape:
    class_id: int  # index into SHAPE_CLASSES
    color: str  # key of COLORS
    box: tuple[int, int, int, int]  # x, y, w, h in pixels (w == h == size)
    full_area: int  # pixel count of the whole shape, before occlusion
    visible: np.ndarray  # bool [H, W]: pixels of this object not covered by later ones


def _render_image(config: ShapesConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[_Shape]]:
    """Place and draw one image's objects.

    Returns:
        ``(pixels, mask, shapes)``: uint8 ``[S, S, 3]`` RGB, uint8 ``[S, S]`` class id + 1 (0 = background), and the
        shapes in drawing order with their visible pixels.
    """
    size = config.image_size
    noise = rng.normal(0.0, config.background_noise, (size, size, 3))
    pixels = np.clip(np.rint(_BACKGROUND_GREY + noise), 0, 255).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)
    shapes: list[_Shape] = []
    for _ in range(int(rng.integers(config.min_objects, config.max_objects + 1))):
        shape = _place(config, rng, shapes)
        if shape is None:
            if len(shapes) >= config.min_objects:
                break
            raise ValueError(
                f"ShapesConfig: could not place {config.min_objects} objects of size {config.min_size}.."
                f"{config.max_size} in a {size}x{size} image with box IoU <= {_MAX_IOU} after {_PLACEMENT_TRIES} "
                f"tries; lower min_objects or max_size, or raise image_size (config {config!r})"
            )
        for earlier in shapes:
            earlier.visible &= ~shape.visible
        shapes.append(shape)
        pixels[shape.visible] = COLORS[shape.color]
        mask[shape.visible] = shape.class_id + 1
    return pixels, mask, shapes


def _place(config: ShapesConfig, rng: np.random.Generator, shapes: list[_Shape]) -> _Shape | None:
    """Sample one object that stays inside the image and does not hide the earlier ones; None if none fits."""
    for _ in range(_PLACEMENT_TRIES):
        side = int(rng.integers(config.min_size, config.max_size + 1))
        x, y = (int(v) for v in rng.integers(0, config.image_size - side + 1, size=2))
        class_id = int(rng.integers(len(SHAPE_CLASSES)))
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        box = (x, y, side, side)
        if any(_iou(box, s.box) > _MAX_IOU for s in shapes):
            continue
        drawn = _draw(class_id, box, config.image_size)
        if any(np.count_nonzero(s.visible & ~drawn) < _MIN_VISIBLE * s.full_area for s in shapes):
            continue
        return _Shape(class_id=class_id, color=color, box=box, full_area=int(np.count_nonzero(drawn)), visible=drawn)
    return None


def _draw(class_id: int, box: tuple[int, int, int, int], image_size: int) -> np.ndarray:
    """Bool ``[S, S]`` pixels of one shape drawn with PIL.ImageDraw; ``box`` is ``(x, y, side, side)``."""
    x, y, side, _ = box
    x1, y1 = x + side - 1, y + side - 1  # ImageDraw coordinates are inclusive pixel indices
    canvas = Image.new("L", (image_size, image_size), 0)
    draw = ImageDraw.Draw(canvas)
    name = SHAPE_CLASSES[class_id]
    if name == "circle":
        draw.ellipse((x, y, x1, y1), fill=1)
    elif name == "square":
        draw.rectangle((x, y, x1, y1), fill=1)
    else:  # upright isosceles triangle: apex at the top centre, base along the bottom row
        draw.polygon([(x + (side - 1) / 2, y), (x1, y1), (x, y1)], fill=1)
    return np.asarray(canvas).astype(bool)


def _outline(shape: _Shape) -> list[float]:
    """COCO polygon ``[x1, y1, x2, y2, ...]`` (pixel-edge coordinates) of the whole shape, before occlusion."""
    x, y, side, _ = shape.box
    name = SHAPE_CLASSES[shape.class_id]
    if name == "circle":
        angles = np.linspace(0.0, 2 * np.pi, _CIRCLE_VERTICES, endpoint=False)
        points = [(x + side / 2 * (1 + np.cos(a)), y + side / 2 * (1 + np.sin(a))) for a in angles]
    elif name == "square":
        points = [(x, y), (x + side, y), (x + side, y + side), (x, y + side)]
    else:
        points = [(x + side / 2, y), (x + side, y + side), (x, y + side)]
    return [round(float(v), 2) for point in points for v in point]


def _captions(shapes: list[_Shape], *, config: ShapesConfig) -> list[str]:
    """Two deterministic captions for one image, e.g. "a small red circle above a large blue square"."""
    midpoint = (config.min_size + config.max_size) / 2

    def phrase(shape: _Shape, *, sized: bool = True) -> str:
        size = ("large " if shape.box[2] >= midpoint else "small ") if sized else ""
        return f"a {size}{shape.color} {SHAPE_CLASSES[shape.class_id]}"

    if len(shapes) == 1:
        (shape,) = shapes
        cx, cy = _centre(shape.box)
        third = config.image_size / 3
        where = _POSITIONS[min(int(cy // third), 2)][min(int(cx // third), 2)]
        return [f"{phrase(shape)} {where}", f"there is {phrase(shape)} {where}"]
    if len(shapes) == 2:
        a, b = shapes
        return [f"{phrase(a)} {_relation(a, b)} {phrase(b)}", f"{phrase(b)} {_relation(b, a)} {phrase(a)}"]
    left_to_right = sorted(shapes, key=lambda s: _centre(s.box)[0])  # stable: ties keep drawing order
    return [_join([phrase(s) for s in shapes]),
            "from left to right: " + _join([phrase(s, sized=False) for s in left_to_right])]


def _relation(a: _Shape, b: _Shape) -> str:
    """Where ``a`` is relative to ``b``, from box centres: above / below / left of / right of."""
    (ax, ay), (bx, by) = _centre(a.box), _centre(b.box)
    dx, dy = ax - bx, ay - by
    if dx == dy == 0:  # concentric: a small shape drawn on a large one
        return "in front of" if a.visible.sum() == a.full_area and b.visible.sum() < b.full_area else "behind"
    if abs(dy) >= abs(dx):
        return "above" if dy < 0 else "below"
    return "left of" if dx < 0 else "right of"


def _join(phrases: list[str]) -> str:
    return ", ".join(phrases[:-1]) + " and " + phrases[-1] if len(phrases) > 1 else phrases[0]


def _centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    return box[0] + box[2] / 2, box[1] + box[3] / 2


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """IoU of two ``[x, y, w, h]`` boxes."""
    iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # file systems without hard links
        shutil.copyfile(source, target)
