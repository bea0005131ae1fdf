"""Reading COCO-format annotation files safely, for every task (detection, segmentation, captioning).

:func:`load_coco` parses a COCO JSON with pycocotools and checks what pycocotools takes on trust:

* every image ``file_name`` must resolve to a file INSIDE ``images_root`` — absolute paths and ``../`` escapes are
  refused (:class:`CocoFormatError` naming the JSON file, the image id and the bad ``file_name``); a listed image that
  does not exist is an error naming the missing file;
* annotation ids that pycocotools mishandles are renumbered in memory (never in the user's file): ``COCOeval`` treats
  a matched ground-truth id of ``0`` as "unmatched" (it stores matched ids in a zero-initialised array), and duplicate
  or missing ids collapse in ``COCO.anns``. The original id stays in each annotation as ``"orig_id"`` so error
  messages can name it;
* ``iscrowd`` (default 0) and ``area`` (default box ``w * h``) are filled in where missing, since ``COCOeval`` needs
  them;
* annotations pointing to an unknown image or category are errors naming the annotation id.

Coordinates: COCO boxes are ``[x, y, w, h]`` in absolute pixels of the image **as displayed**, i.e. after its EXIF
orientation is applied — the convention of the COCO tools, and what :func:`zoo.data.images.load_image` returns.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import ZooError

__all__ = ["CocoFormatError", "CocoImage", "CocoDataset", "load_coco", "prepare_coco_dict", "coco_from_dict",
           "resolve_inside"]


class CocoFormatError(ZooError, ValueError):
    """A COCO file (or dict) cannot be used; the message names the file and the offending entry."""


@dataclass(frozen=True)
class CocoImage:
    """One entry of the ``images`` list.

    Attributes:
        id: the COCO image id.
        path: the image file, resolved inside ``images_root``.
        width / height: as written in the JSON (pixels of the displayed, EXIF-transposed image).
        file_name: as written in the JSON.
    """

    id: int
    path: Path
    width: int
    height: int
    file_name: str


@dataclass
class CocoDataset:
    """A parsed, checked COCO file.

    Attributes:
        json_path: the file read.
        coco: the ``pycocotools.coco.COCO`` object (index built; ``coco.imgToAnns[image_id]`` lists annotations,
            whose ``"id"`` may be renumbered — ``"orig_id"`` holds the id in the file).
        images: every image of the file, in file order.
        categories: the ``categories`` entries sorted by id.
        label_of: COCO category id -> contiguous 0-based label (the position in ``categories``).
    """

    json_path: Path
    coco: Any
    images: list[CocoImage]
    categories: list[dict]
    label_of: dict[int, int]

    @property
    def classes(self) -> tuple[str, ...]:
        """Category names in label order (sorted by category id)."""
        return tuple(str(c["name"]) for c in self.categories)

    def annotations(self, image_id: int) -> list[dict]:
        """The annotations of one image (empty for a background image)."""
        return list(self.coco.imgToAnns.get(image_id, []))


def resolve_inside(root: Path, name: str, *, where: str) -> Path:
    """``root / name`` if it stays inside ``root``; absolute names and ``..`` escapes raise.

    Args:
        root: the dataset root (need not be resolved).
        name: a relative file name from an annotation file.
        where: what to name in the error ("annotations.json, image id 7").

    Raises:
        CocoFormatError: ``name`` is absolute or leaves ``root``.
    """
    if not name or Path(name).is_absolute() or os.path.isabs(name) or name.startswith(("/", "\\")) \
            or (len(name) > 1 and name[1] == ":"):  # Windows drive letters on any OS
        raise CocoFormatError(f"{where}: file_name {name!r} is absolute or empty; file names must be relative "
                              f"to the images root {str(root)!r}")
    base = root.expanduser().resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base):
        raise CocoFormatError(f"{where}: file_name {name!r} points outside the images root {str(base)!r}; "
                              "refusing to read it")
    return path


def prepare_coco_dict(data: Any, *, source: str) -> dict:
    """A checked copy of a COCO dict that pycocotools evaluates correctly (see the module docstring).

    The input is not modified. Annotation ids are renumbered 1..N (file order) when any is missing, non-positive or
    duplicated; the original id is kept as ``"orig_id"``.

    Args:
        data: the parsed JSON.
        source: what to name in errors (the file, or "ground truth").

    Raises:
        CocoFormatError: not a COCO dict; an annotation refers to an unknown image or category, or has a malformed
            ``bbox``.
    """
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CocoFormatError(f"{source}: not a COCO file (expected an object with an 'images' list)")
    # Copies of the containers and of each annotation (the only dicts changed here or by COCOeval, which adds keys
    # to annotations); segmentations and images are shared with the input, read-only.
    data = {**data, "images": list(data["images"]), "annotations": [dict(a) for a in data.get("annotations") or []],
            "categories": list(data.get("categories") or [])}
    if not all(isinstance(c, dict) and "id" in c for c in data["categories"]):
        raise CocoFormatError(f"{source}: every entry of 'categories' needs an 'id'")
    for key in ("id", "name"):  # a repeated id makes a phantom class; a repeated name makes ap/<name> keys collide
        seen = [c.get(key) for c in data["categories"] if key == "id" or "name" in c]
        repeated = sorted({repr(v) for v in seen if seen.count(v) > 1})
        if repeated:
            raise CocoFormatError(f"{source}: category {key}(s) {', '.join(repeated)} appear more than once in "
                                  f"'categories'; every category needs its own {key}")
    images = {}
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image:
            raise CocoFormatError(f"{source}: images[{i}] has no 'id'")
        if image["id"] in images:
            raise CocoFormatError(f"{source}: image id {image['id']} appears twice in 'images'")
        images[image["id"]] = image
    category_ids = {c["id"] for c in data["categories"]}
    anns = data["annotations"]
    ids = [a.get("id") if isinstance(a, dict) else None for a in anns]
    renumber = any(not isinstance(i, int) or i <= 0 for i in ids) or len(set(ids)) != len(ids)
    for n, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise CocoFormatError(f"{source}: annotations[{n}] is not an object: {ann!r}")
        name = f"annotation id {ann.get('id', '(none)')} (annotations[{n}])"
        if ann.get("image_id") not in images:
            raise CocoFormatError(f"{source}: {name} refers to image id {ann.get('image_id')!r}, which is not in "
                                  "'images'")
        if "category_id" in ann and category_ids and ann["category_id"] not in category_ids:
            raise CocoFormatError(f"{source}: {name} has category_id {ann['category_id']!r}; valid category ids: "
                                  f"{sorted(category_ids)}")
        if "bbox" in ann:
            box = ann["bbox"]
            if not isinstance(box, list | tuple) or len(box) != 4 or not all(isinstance(v, int | float) for v in box):
                raise CocoFormatError(f"{source}: {name} has bbox {box!r}; expected [x, y, width, height] numbers")
            ann.setdefault("area", float(box[2]) * float(box[3]))
        ann.setdefault("iscrowd", 0)
        if renumber:
            ann["orig_id"] = ann.get("id")
            ann["id"] = n + 1
        else:
            ann.setdefault("orig_id", ann["id"])
    return data


def coco_from_dict(data: dict, *, api: Any = None) -> Any:
    """A ``COCO`` object (index built, prints silenced) over an already prepared dict.

    Args:
        data: a dict from :func:`prepare_coco_dict` (used as is, not copied).
        api: the ``COCO`` class to build (default ``pycocotools.coco.COCO``; ``faster_coco_eval.COCO`` works too).
    """
    if api is None:
        from pycocotools.coco import COCO as api
    with contextlib.redirect_stdout(io.StringIO()):
        coco = api()
        coco.dataset = data
        coco.createIndex()
    return coco


def load_coco(json_path: str | os.PathLike, images_root: str | os.PathLike, *, field: str = "data.train_json",
              check_files: bool = True) -> CocoDataset:
    """Parse and check a COCO annotation file whose image ``file_name``s are relative to ``images_root``.

    Args:
        json_path: the COCO JSON file.
        images_root: the folder image file names are relative to; nothing outside it is read.
        field: the recipe field the file came from, named in errors ("data.val_json").
        check_files: require every listed image file to exist (turn off only for evaluation-only uses).

    Returns:
        A :class:`CocoDataset`; categories sorted by id with contiguous 0-based labels.

    Raises:
        CocoFormatError: missing or unparsable file (naming ``field``), a ``file_name`` outside ``images_root``, a
            missing image file, or an inconsistent annotation (see :func:`prepare_coco_dict`).
    """
    json_path = Path(json_path).expanduser()
    root = Path(images_root).expanduser()
    if not json_path.is_file():
        raise CocoFormatError(f"{field}: COCO file {str(json_path)!r} does not exist")
    try:
        raw = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CocoFormatError(f"{field}: cannot parse {str(json_path)!r} as JSON: {error}") from error
    data = prepare_coco_dict(raw, source=f"{json_path} ({field})")
    images = []
    for entry in data["images"]:
        where = f"{json_path} ({field}), image id {entry['id']}"
        if "file_name" not in entry:
            raise CocoFormatError(f"{where}: no 'file_name'")
        path = resolve_inside(root, str(entry["file_name"]), where=where)
        if check_files and not path.is_file():
            raise CocoFormatError(f"{where}: image file {str(path)!r} (file_name {entry['file_name']!r}) does not "
                                  "exist")
        images.append(CocoImage(id=entry["id"], path=path, width=int(entry.get("width", 0)),
                                height=int(entry.get("height", 0)), file_name=str(entry["file_name"])))
    categories = sorted(data["categories"], key=lambda c: c["id"])
    return CocoDataset(json_path=json_path, coco=coco_from_dict(data), images=images, categories=categories,
                       label_of={c["id"]: i for i, c in enumerate(categories)})
