"""Detection data: the one internal target format, its task hooks, and adapters for four on-disk formats.

**Target format** (what every detection/localization head and loss receives, one dict per image)::

    {"boxes":     float32 [K, 4]  xyxy, absolute pixels of the image as yielded (after the pipeline: of the
                                  model input), pixel-edge coordinates (a box over columns 3..12 is x1=3, x2=13),
     "labels":    int64 [K]       0-based class ids (index into DataSplits.classes),
     "image_id":  int             id of the image in its source (the COCO image id where there is one),
     "orig_size": (H, W)          of the decoded image before the pipeline,
     "size":      (H, W)          of the model input (added by zoo.data.targets)}

Sources' ``load(i)`` return ``(uint8 [H, W, C] image, target)`` with numpy ``boxes``/``labels``; after the
pipeline (``zoo.data.targets``) they are torch tensors. ``K`` may be 0 (a background image: ``boxes`` is
``[0, 4]``).

**Formats read**: the synthetic shapes set, COCO JSON, YOLO txt folders, Pascal VOC XML. Images are decoded by
:func:`zoo.data.images.load_image`, which applies the EXIF orientation, so annotation coordinates refer to the image
as displayed — as the COCO tools and Ultralytics assume.

**Bad input**: a box partly outside its image is clipped, a box of zero or negative area (after clipping) is
dropped with its label — both with one warning per split that counts them and names the first few, and listed in
``DataSplits.skipped``; a class id out of range, a missing image file and a file name outside the dataset root
are errors naming the file and the entry.
"""

from __future__ import annotations

import logging
import warnings
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np

from zoo.data.base import DataSplits, ImageData, stratified_split
from zoo.data.coco import load_coco, resolve_inside
from zoo.data.images import IMAGE_EXTENSIONS, ImageDecodeError, image_size, load_image
from zoo.data.shapes import SHAPE_CLASSES, ShapesConfig, shapes_root
from zoo.errors import RecipeError, ZooError
from zoo.recipe.spec import Range, spec

__all__ = ["DetectionRecord", "DetectionSource", "BoxReport",
           "ShapesDetectionData", "CocoDetectionData", "YoloFolderData", "VocData"]

log = logging.getLogger(__name__)
_EXAMPLES = 3  # entries named in a clip/drop warning


# The albumentations inputs, compose arguments, finishing and collation of box targets: zoo.data.targets ("boxes").


# --- records, sources and box checks ---------------------------------------------------------------------------------


@dataclass
class DetectionRecord:
    """One annotated image on disk.

    ``boxes`` are xyxy float32 ``[K, 4]`` in absolute pixels, or in 0..1 of the width/height when ``normalized``
    (YOLO files: the pixel size is known only once the image is decoded). ``size`` is the ``(H, W)`` the
    annotations claim (``None``: unknown); a decoded image of another size is an error.
    """

    path: Path
    image_id: int
    boxes: np.ndarray
    labels: np.ndarray
    size: tuple[int, int] | None = None
    normalized: bool = False


@dataclass
class DetectionSource:
    """Random access to ``(uint8 [H, W, C] image, target dict)`` of one split."""

    records: list[DetectionRecord]
    channels: int = 3

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> tuple[np.ndarray, dict]:
        record = self.records[index]
        image = load_image(record.path, channels=self.channels)
        h, w = image.shape[:2]
        _check_size(record, h, w)
        boxes = record.boxes * np.float32([w, h, w, h]) if record.normalized else record.boxes.copy()
        return image, {"boxes": boxes.astype(np.float32), "labels": record.labels.copy(),
                       "image_id": record.image_id, "orig_size": (h, w)}


@dataclass
class BoxReport:
    """Boxes clipped or dropped while reading one split; :meth:`warn` reports them once."""

    clipped: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    absurd: list[str] = field(default_factory=list)

    def clean(self, boxes: np.ndarray, labels: np.ndarray, *, width: float, height: float,
              names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Clip xyxy ``boxes`` to the image; drop those left without area (with their labels).

        ``names`` says where each box comes from ("a.json annotation id 7"), for the warnings.
        """
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        size = np.float32([width, height, width, height])
        # non-finite, or more than an image size outside the image: not a box to clip into a whole-image box
        absurd = ~np.all(np.isfinite(boxes) & (boxes >= -size) & (boxes <= 2 * size), axis=1)
        clipped = np.clip(np.nan_to_num(boxes), 0, size)
        moved = np.any(clipped != boxes, axis=1)
        keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1]) & ~absurd
        self.clipped += [n for n, m, k in zip(names, moved, keep) if m and k]
        self.dropped += [n for n, k, a in zip(names, keep, absurd) if not k and not a]
        self.absurd += [n for n, a in zip(names, absurd) if a]
        return clipped[keep], np.asarray(labels, np.int64).reshape(-1)[keep]

    def warn(self, split: str) -> list[tuple[Path, str]]:
        """Warn about the clipped and dropped boxes; returns them as ``DataSplits.skipped`` entries."""
        for kind, items in (("clipped to the image: partly outside it", self.clipped),
                            ("dropped with their labels: zero or negative area", self.dropped),
                            ("dropped with their labels: non-finite or more than an image size outside it",
                             self.absurd)):
            if items:
                more = f" and {len(items) - _EXAMPLES} more" if len(items) > _EXAMPLES else ""
                warnings.warn(f"{split}: {len(items)} box(es) {kind} ({'; '.join(items[:_EXAMPLES])}{more})",
                              stacklevel=3)
        return [(Path(n.split(" ")[0]), f"{why} box dropped: {n}")
                for why, items in (("zero or negative area", self.dropped), ("absurd", self.absurd)) for n in items]


def _split(records: list, *, val_fraction: float, test_fraction: float, seed: int) -> tuple[list, list, list]:
    """A seeded random split of ``records`` into train/val/test."""
    parts = stratified_split(np.zeros(len(records), np.int64), val_fraction=val_fraction, test_fraction=test_fraction,
                             seed=seed)
    return tuple([records[i] for i in ix] for ix in parts)


def _check_size(record: DetectionRecord, h: int, w: int) -> None:
    if record.size is not None and tuple(record.size) != (h, w):
        raise ZooError(f"{record.path}: the annotations give size HxW {tuple(record.size)}, the image (after its EXIF "
                       f"orientation) is {(h, w)}; annotations must describe the displayed image")


def _scan_records(parts: dict[str, list[DetectionRecord]]) -> list[tuple[Path, str]]:
    """Checks every image's header at setup (a broken file would otherwise stop training mid-epoch).

    Undecodable images are left out of their split with a warning naming them, and returned as skipped; a size that
    disagrees with the annotations is an error now rather than in a loader worker.
    """
    records = {r.path: r for part in parts.values() for r in part}
    with ThreadPoolExecutor(max_workers=4) as pool:
        sizes = dict(zip(records, pool.map(_header_size, records)))
    bad = [(path, size) for path, size in sizes.items() if isinstance(size, str)]
    for path, reason in bad:
        warnings.warn(f"skipping undecodable image {path}: {reason}", stacklevel=3)
    for path, size in sizes.items():
        if not isinstance(size, str):
            _check_size(records[path], size[1], size[0])
    for name, part in parts.items():
        parts[name] = [r for r in part if not isinstance(sizes[r.path], str)]
    if bad:
        log.warning("skipped %d undecodable image(s)", len(bad))
    return bad


def _header_size(path: Path) -> tuple[int, int] | str:
    try:
        return image_size(path, verify=True)
    except ImageDecodeError as error:
        return error.reason


def _splits(classes: tuple[str, ...], parts: dict[str, list[DetectionRecord]], channels: int,
            reports: dict[str, BoxReport]) -> DataSplits:
    skipped = [entry for split, report in reports.items() for entry in report.warn(split)]
    skipped += _scan_records(parts)
    if not parts["train"]:
        raise ZooError("the train split has no images")
    return DataSplits.single("boxes", classes=classes, skipped=skipped,
                      **{name: DetectionSource(parts[name], channels) for name in ("train", "val", "test")})


def _coco_records(json_path: str, images: str, *, field_name: str, report: BoxReport,
                  check_files: bool = True) -> tuple[tuple[str, ...], list[DetectionRecord]]:
    """Records of a COCO file (crowd annotations are left out of training targets)."""
    data = load_coco(json_path, images, field=field_name, check_files=check_files)
    records, crowd = [], 0
    for image in data.images:
        anns = data.annotations(image.id)
        crowd += sum(bool(a.get("iscrowd")) for a in anns)
        anns = [a for a in anns if not a.get("iscrowd") and "bbox" in a]
        xywh = np.asarray([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        labels = np.asarray([data.label_of[a["category_id"]] for a in anns], np.int64)
        names = [f"{data.json_path} annotation id {a['orig_id']} (image id {image.id})" for a in anns]
        known = image.width > 0 and image.height > 0
        # without width/height in the entry, the image header gives the size boxes are checked against
        width, height = (image.width, image.height) if known else image_size(image.path) if check_files \
            else (np.inf, np.inf)
        boxes, labels = report.clean(boxes, labels, width=width, height=height, names=names)
        records.append(DetectionRecord(image.path, image.id, boxes, labels,
                                       (image.height, image.width) if known else None))
    if crowd:
        log.info("%s: %d crowd annotation(s) left out of the training targets", json_path, crowd)
    return data.classes, records


# --- adapters -------------------------------------------------------------------------------------------------------


@spec
class ShapesDetectionData(ImageData):
    num_images: Annotated[int, Range(ge=10)] = 2000  # images rendered (rendered once, then cached)
    render_size: Annotated[int, Range(ge=32)] = 64  # side of the rendered images in pixels
    min_objects: Annotated[int, Range(ge=1)] = 1  # objects per image: min_objects..max_objects
    max_objects: Annotated[int, Range(ge=1)] = 4  # 1: the single-object set, for localization
    min_size: Annotated[int, Range(ge=3)] = 10  # object side range in pixels (varied sizes)
    max_size: Annotated[int, Range(ge=3)] = 32  # largest object side in pixels
    shapes_seed: int = 0  # seeds the renderer: the same settings give the same files
    image_size: Annotated[int, Range(ge=8, le=8192)] = 64  # model input side (images are resized to it)
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.25, 0.25, 0.25)
    val_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.15  # share of images for validation
    test_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.15  # share of images for testing (the held-out split)
    split_seed: int = 0  # seeds the split
    cache_dir: str | None = None  # where the rendered set lives (default $ZOO_CACHE or ~/.cache/zoo)

    targets = ("boxes",)

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            self.config()
        except ValueError as error:
            raise RecipeError("data", str(error).replace("ShapesConfig.", "")) from error

    def config(self) -> ShapesConfig:
        return ShapesConfig(num_images=self.num_images, image_size=self.render_size, min_objects=self.min_objects,
                            max_objects=self.max_objects, min_size=self.min_size, max_size=self.max_size,
                            seed=self.shapes_seed)

    def static_classes(self) -> tuple[str, ...]:
        return SHAPE_CLASSES

    def setup(self) -> DataSplits:
        root = shapes_root(self.config(), self.cache_dir)
        report = BoxReport()
        classes, records = _coco_records(str(root / "annotations.json"), str(root), field_name="shapes",
                                         report=report, check_files=False)
        train, val, test = _split(records, val_fraction=self.val_fraction, test_fraction=self.test_fraction,
                                  seed=self.split_seed)
        return _splits(classes, {"train": train, "val": val, "test": test}, self.channels, {"shapes": report})


@spec
class CocoDetectionData(ImageData):
    images: str | None = None  # folder the JSON files' image file_names are relative to; required
    train_json: str | None = None  # COCO annotations of the training images; required
    val_json: str | None = None  # COCO annotations of the validation images; required
    test_json: str | None = None  # COCO annotations of the test images (None: the validation set is the test set)
    image_size: Annotated[int, Range(ge=8, le=8192)] = 320  # model input side

    targets = ("boxes",)

    def preflight(self) -> None:
        checks = (("images", Path.is_dir, "folder"), ("train_json", Path.is_file, "file"),
                  ("val_json", Path.is_file, "file"), ("test_json", Path.is_file, "file"))
        for name, exists, kind in checks:
            value = getattr(self, name)
            if value is None:
                if name != "test_json":
                    raise RecipeError(f"data.{name}", f"is not set; pass data.{name}=PATH (a {kind})")
            elif not exists(Path(value).expanduser()):
                raise RecipeError(f"data.{name}", f"{kind} {value!r} does not exist")

    def setup(self) -> DataSplits:
        self.preflight()
        parts, reports, classes = {}, {}, None
        for split in ("train", "val", "test") if self.test_json else ("train", "val"):
            name = f"{split}_json"
            path = getattr(self, name)
            reports[split] = BoxReport()
            found, parts[split] = _coco_records(path, self.images, field_name=f"data.{name}", report=reports[split])
            if classes is not None and found != classes:
                raise RecipeError(f"data.{name}", f"{path} has categories {list(found)}, data.train_json has "
                                                  f"{list(classes)}; every split needs the same categories")
            classes = found
        if not classes:
            raise RecipeError("data.train_json", f"{self.train_json} has no 'categories'")
        parts.setdefault("test", parts["val"])
        return _splits(classes, parts, self.channels, reports)


def _read_names(root: Path, names: tuple[str, ...] | None, field_name: str) -> tuple[str, ...]:
    if names:
        return tuple(names)
    listing = root / "classes.txt"
    if listing.is_file():
        return tuple(line.strip() for line in listing.read_text().splitlines() if line.strip())
    raise RecipeError(field_name, f"is not set and {listing} does not exist; give the class names in id order")


@spec
class YoloFolderData(ImageData):
    root: str | None = None  # folder with images/ and labels/ (optionally each with train/ val/ test/); required
    names: tuple[str, ...] | None = None  # class names in id order (None: read root/classes.txt)
    val_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1  # without images/val: share of images for validation
    test_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1  # without images/test: share of images for testing
    split_seed: int = 0  # seeds the split
    image_size: Annotated[int, Range(ge=8, le=8192)] = 320  # model input side

    targets = ("boxes",)

    def preflight(self) -> None:
        if self.root is None:
            raise RecipeError("data.root", "is not set; pass data.root=PATH (a folder with images/ and labels/)")
        if not (Path(self.root).expanduser() / "images").is_dir():
            raise RecipeError("data.root", f"{self.root!r} has no images/ folder")

    def setup(self) -> DataSplits:
        self.preflight()
        root = Path(self.root).expanduser()
        classes = _read_names(root, self.names, "data.names")
        reports: dict[str, BoxReport] = {}
        subsets = [s for s in ("train", "val", "test") if (root / "images" / s).is_dir()]
        parts = {s: self._read(root, s, classes, reports.setdefault(s, BoxReport())) for s in subsets or [""]}
        if "train" not in parts:
            parts["train"] = parts.pop("", [])
        missing = [s for s in ("val", "test") if s not in parts]
        if missing:
            train, val, test = _split(parts["train"], val_fraction=self.val_fraction if "val" in missing else 0,
                                      test_fraction=self.test_fraction if "test" in missing else 0,
                                      seed=self.split_seed)
            parts.update({"train": train, **{s: p for s, p in (("val", val), ("test", test)) if s in missing}})
        return _splits(classes, parts, self.channels, reports or {"data": BoxReport()})

    def _read(self, root: Path, subset: str, classes: tuple[str, ...], report: BoxReport) -> list[DetectionRecord]:
        images_dir, labels_dir = root / "images" / subset, root / "labels" / subset
        images = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        stems: dict[Path, Path] = {}
        for p in images:  # 0.jpg and 0.png would share the label file 0.txt
            stem = p.relative_to(images_dir).with_suffix("")
            if stem in stems:
                raise ZooError(f"{images_dir}: images {stems[stem].name!r} and {p.name!r} share the id {str(stem)!r} "
                               f"(and so the label file {str(stem)}.txt); rename one of them")
            stems[stem] = p
        for label_file in sorted(labels_dir.rglob("*.txt")) if labels_dir.is_dir() else []:
            if label_file.relative_to(labels_dir).with_suffix("") not in stems:
                raise ZooError(f"{label_file}: no image for this label file in {images_dir} "
                               f"(expected {label_file.stem}.<{'|'.join(sorted(IMAGE_EXTENSIONS))}>)")
        records = []
        for image_id, (stem, path) in enumerate(sorted(stems.items())):
            label_file = labels_dir / stem.with_suffix(".txt")
            rows, names = [], []
            lines = label_file.read_text().splitlines() if label_file.is_file() else []
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                rows.append(self._parse(line, f"{label_file}:{number}", len(classes)))
                names.append(f"{label_file}:{number}")
            table = np.asarray(rows, np.float64).reshape(-1, 5)
            centre, half = table[:, 1:3], table[:, 3:5] / 2
            boxes, labels = report.clean(np.concatenate([centre - half, centre + half], axis=1), table[:, 0],
                                         width=1.0, height=1.0, names=names)
            records.append(DetectionRecord(path, image_id, boxes, labels, normalized=True))
        return records

    @staticmethod
    def _parse(line: str, where: str, num_classes: int) -> list[float]:
        fields = line.split()
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        if len(values) != 5 or not values[0].is_integer():
            raise ZooError(f"{where}: expected 'class cx cy w h' (an integer class id and four numbers in 0..1), "
                           f"got {line.strip()!r}")
        if not 0 <= values[0] < num_classes:
            raise ZooError(f"{where}: class id {int(values[0])} out of range; valid ids are 0..{num_classes - 1}")
        return values


@spec
class VocData(ImageData):
    root: str | None = None  # folder with Annotations/*.xml and JPEGImages/ (optionally ImageSets/Main/*.txt)
    classes: tuple[str, ...] | None = None  # class names (None: every object name found in the XML files, sorted)
    include_difficult: bool = False  # keep objects marked <difficult>1</difficult> (VOC evaluation ignores them)
    val_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1  # without ImageSets/Main/val.txt: share for validation
    test_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1  # without ImageSets/Main/test.txt: share for testing
    split_seed: int = 0  # seeds the split
    image_size: Annotated[int, Range(ge=8, le=8192)] = 320  # model input side

    targets = ("boxes",)

    def preflight(self) -> None:
        if self.root is None:
            raise RecipeError("data.root", "is not set; pass data.root=PATH (a folder with Annotations/ and "
                                           "JPEGImages/)")
        if not (Path(self.root).expanduser() / "Annotations").is_dir():
            raise RecipeError("data.root", f"{self.root!r} has no Annotations/ folder")

    def setup(self) -> DataSplits:
        self.preflight()
        root = Path(self.root).expanduser()
        files = sorted((root / "Annotations").glob("*.xml"))
        parsed = [self._parse(xml) for xml in files]
        classes = self.classes or tuple(sorted({name for _, _, objects in parsed for name, *_ in objects}))
        report, records, difficult = BoxReport(), {}, 0
        for image_id, (xml, (path, size, objects)) in enumerate(zip(files, parsed)):
            kept = [o for o in objects if self.include_difficult or not o[1]]
            difficult += len(objects) - len(kept)
            for number, (name, *_rest) in enumerate(kept):
                if name not in classes:
                    raise ZooError(f"{xml}: object {number} has class {name!r}, not one of data.classes "
                                   f"{list(classes)}")
            boxes, labels = report.clean(np.asarray([o[2] for o in kept], np.float32),
                                         np.asarray([classes.index(o[0]) for o in kept], np.int64),
                                         width=size[1] if size else np.inf, height=size[0] if size else np.inf,
                                         names=[f"{xml} object {i}" for i in range(len(kept))])
            records[xml.stem] = DetectionRecord(path, image_id, boxes, labels, size)
        if difficult:
            log.info("%s: %d difficult object(s) left out (data.include_difficult=False)", root, difficult)
        lists = root / "ImageSets" / "Main"
        if (lists / "train.txt").is_file() and (lists / "val.txt").is_file():
            parts = {s: [records[n] for n in (lists / f"{s}.txt").read_text().split()]
                     for s in ("train", "val", "test") if (lists / f"{s}.txt").is_file()}
            parts.setdefault("test", parts["val"])
        else:
            train, val, test = _split(list(records.values()), val_fraction=self.val_fraction,
                                      test_fraction=self.test_fraction, seed=self.split_seed)
            parts = {"train": train, "val": val, "test": test}
        return _splits(classes, parts, self.channels, {"voc": report})

    def _parse(self, xml: Path) -> tuple[Path, tuple[int, int] | None, list[tuple[str, bool, list[float]]]]:
        """``(image path, (H, W) or None, [(class name, difficult, xyxy pixel-edge box)])`` of one XML file."""
        try:
            tree = ET.parse(xml).getroot()
        except ET.ParseError as error:
            raise ZooError(f"{xml}: not valid XML: {error}") from error
        name = tree.findtext("filename") or xml.stem + ".jpg"
        path = resolve_inside(Path(self.root) / "JPEGImages", name, where=str(xml))
        if not path.is_file():
            raise ZooError(f"{xml}: image file {str(path)!r} does not exist")
        w, h = (int(float(tree.findtext(f"size/{k}") or 0)) for k in ("width", "height"))
        objects = []
        for number, obj in enumerate(tree.iter("object")):
            try:  # VOC corners are 1-based inclusive pixel indices: xmin - 1 is the left pixel edge
                x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError) as error:
                raise ZooError(f"{xml}: object {number} has no numeric bndbox xmin/ymin/xmax/ymax") from error
            objects.append((obj.findtext("name", "").strip(), obj.findtext("difficult", "0").strip() == "1",
                            [x1 - 1, y1 - 1, x2, y2]))
        return path, ((h, w) if w > 0 and h > 0 else None), objects

