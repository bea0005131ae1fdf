"""zoo.data.shapes: deterministic synthetic dataset whose labels agree with each other and with the pixels."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.data.shapes import COLORS, SHAPE_CLASSES, ShapesConfig, render_shapes, shapes_root

SINGLE = ShapesConfig(num_images=20, seed=3)
MULTI = ShapesConfig(num_images=20, min_objects=2, max_objects=4, seed=5)


@pytest.fixture(scope="module")
def single_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_shapes(SINGLE, tmp_path_factory.mktemp("single") / "shapes")


@pytest.fixture(scope="module")
def multi_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_shapes(MULTI, tmp_path_factory.mktemp("multi") / "shapes")


def _coco(root: Path) -> dict:
    return json.loads((root / "annotations.json").read_text())


def _annotations_by_image(coco: dict) -> dict[int, list[dict]]:
    by_image: dict[int, list[dict]] = {image["id"]: [] for image in coco["images"]}
    for annotation in coco["annotations"]:
        by_image[annotation["image_id"]].append(annotation)
    return by_image


def _read(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image


def _mask(root: Path, image_id: int) -> np.ndarray:
    return np.asarray(_read(root / "masks" / f"{image_id:05d}.png"))


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih)


def test_layout_and_file_formats(single_root: Path) -> None:
    coco = _coco(single_root)
    assert [image["id"] for image in coco["images"]] == list(range(1, 21))
    assert coco["images"][0] == {"id": 1, "file_name": "images/00001.png", "width": 64, "height": 64}
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "circle"), (2, "square"), (3, "triangle")]
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    image = _read(single_root / "images" / "00001.png")
    mask = _read(single_root / "masks" / "00001.png")
    assert (image.mode, image.size, mask.mode, mask.size) == ("RGB", (64, 64), "L", (64, 64))
    meta = json.loads((single_root / "meta.json").read_text())
    assert meta["format_version"] == 1 and meta["config"]["num_images"] == 20 and meta["config"]["seed"] == 3


def test_same_config_gives_identical_bytes(single_root: Path, tmp_path: Path) -> None:
    again = render_shapes(SINGLE, tmp_path / "again")
    names = ["annotations.json", "meta.json", "images/00001.png", "images/00007.png", "masks/00020.png"]
    for name in names:
        assert (again / name).read_bytes() == (single_root / name).read_bytes(), name
    other_seed = render_shapes(ShapesConfig(num_images=20, seed=4), tmp_path / "other")
    assert (other_seed / "annotations.json").read_bytes() != (single_root / "annotations.json").read_bytes()


@pytest.mark.parametrize("root_fixture", ["single_root", "multi_root"])
def test_boxes_inside_image_and_mask_agrees_with_boxes(root_fixture: str, request: pytest.FixtureRequest) -> None:
    root = request.getfixturevalue(root_fixture)
    coco = _coco(root)
    for image_id, annotations in _annotations_by_image(coco).items():
        mask = _mask(root, image_id)
        for category_id in (1, 2, 3):
            ours = [a for a in annotations if a["category_id"] == category_id]
            inside_a_box = np.zeros_like(mask, dtype=bool)
            for a in ours:
                x, y, w, h = a["bbox"]
                assert 0 <= x and 0 <= y and x + w <= 64 and y + h <= 64, a
                inside_a_box[int(y) : int(y + h), int(x) : int(x + w)] = True
            of_class = mask == category_id
            assert not (of_class & ~inside_a_box).any(), (image_id, category_id)
            # visible parts are disjoint, so the areas of one class add up to its mask pixels
            assert sum(a["area"] for a in ours) == of_class.sum()
        assert all(a["area"] > 0 for a in annotations)


def test_one_object_boxes_are_tight_around_the_mask(single_root: Path) -> None:
    for image_id, (annotation,) in _annotations_by_image(_coco(single_root)).items():
        ys, xs = np.nonzero(_mask(single_root, image_id))
        x, y, w, h = annotation["bbox"]
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
        assert 12 <= w <= 32 and w == h


def test_images_show_the_objects_colours(multi_root: Path) -> None:
    coco = _coco(multi_root)
    image = np.asarray(_read(multi_root / "images" / "00001.png"))
    mask = _mask(multi_root, 1)
    for annotation in _annotations_by_image(coco)[1]:
        colour = np.array(COLORS[annotation["color"]])
        x, y, w, h = (int(v) for v in annotation["bbox"])
        region = (mask[y : y + h, x : x + w] == annotation["category_id"])
        assert (image[y : y + h, x : x + w][region] == colour).all(axis=-1).any()


@pytest.mark.parametrize("root_fixture", ["single_root", "multi_root"])
def test_class_folders_use_the_largest_object(root_fixture: str, request: pytest.FixtureRequest) -> None:
    root = request.getfixturevalue(root_fixture)
    assert sorted(p.name for p in (root / "classes").iterdir()) == sorted(SHAPE_CLASSES)
    listed = {p.name: p.parent.name for p in (root / "classes").glob("*/*.png")}
    assert len(listed) == 20
    for image_id, annotations in _annotations_by_image(_coco(root)).items():
        largest = max(annotations, key=lambda a: a["area"])  # max keeps the first of equals, as the renderer does
        name = f"{image_id:05d}.png"
        assert listed[name] == SHAPE_CLASSES[largest["category_id"] - 1]
        assert (root / "classes" / listed[name] / name).read_bytes() == (root / "images" / name).read_bytes()


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")  # numpy 2 copy keyword, inside pycocotools
@pytest.mark.parametrize("root_fixture", ["single_root", "multi_root"])
def test_coco_loads_with_pycocotools_and_polygons_match_masks(
    root_fixture: str, request: pytest.FixtureRequest
) -> None:
    from pycocotools.coco import COCO

    root = request.getfixturevalue(root_fixture)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(root / "annotations.json"))
    assert sorted(coco.getCatIds()) == [1, 2, 3]
    for annotation in coco.loadAnns(coco.getAnnIds(imgIds=list(range(1, 11)))):
        polygon = coco.annToMask(annotation).astype(bool)  # whole outline, before occlusion
        visible = _mask(root, annotation["image_id"]) == annotation["category_id"]
        assert (polygon & visible).sum() >= 0.8 * annotation["area"], annotation["id"]
        if root_fixture == "single_root":  # nothing occluded: the polygon is the mask
            assert (polygon & visible).sum() / (polygon | visible).sum() > 0.8, annotation["id"]


def test_captions_two_per_image_naming_the_classes(single_root: Path, multi_root: Path) -> None:
    for root in (single_root, multi_root):
        coco = _coco(root)
        by_image: dict[int, list[str]] = {}
        for caption in coco["captions"]:
            by_image.setdefault(caption["image_id"], []).append(caption["caption"])
        assert [c["id"] for c in coco["captions"]] == list(range(1, 41))
        assert sorted(by_image) == list(range(1, 21))
        for image_id, annotations in _annotations_by_image(coco).items():
            texts = by_image[image_id]
            assert len(texts) == 2 and all(texts) and texts[0] != texts[1]
            for annotation in annotations:
                name = SHAPE_CLASSES[annotation["category_id"] - 1]
                assert all(name in text and annotation["color"] in text for text in texts)
    first = [c["caption"] for c in _coco(single_root)["captions"][:2]]
    assert first[0].startswith(("a small ", "a large ")) and first[0] in first[1]


def test_two_object_captions_use_spatial_relations(tmp_path: Path) -> None:
    root = render_shapes(ShapesConfig(num_images=10, min_objects=2, max_objects=2, seed=1), tmp_path / "pairs")
    inverse = {"above": "below", "below": "above", "left of": "right of", "right of": "left of",
               "in front of": "behind", "behind": "in front of"}
    captions = [c["caption"] for c in _coco(root)["captions"]]
    for first, second in zip(captions[::2], captions[1::2]):
        relation = next(r for r in inverse if f" {r} a " in first)
        assert f" {inverse[relation]} a " in second


def test_multi_object_config_places_several_non_overlapping_objects(multi_root: Path) -> None:
    counts = []
    for annotations in _annotations_by_image(_coco(multi_root)).values():
        counts.append(len(annotations))
        boxes = [a["bbox"] for a in annotations]
        assert all(_iou(a, b) <= 0.3 for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    assert min(counts) >= 2 and max(counts) <= 4 and max(counts) > 2


def test_existing_root_is_reused_and_no_temp_dir_remains(tmp_path: Path) -> None:
    config = ShapesConfig(num_images=5, seed=9)
    root = shapes_root(config, cache_dir=tmp_path)
    assert root.parent == tmp_path and root.name.startswith("shapes-")
    stamp = (root / "meta.json").stat().st_mtime_ns, (root / "images" / "00001.png").stat().st_mtime_ns
    os.utime(root / "meta.json", ns=(1, 1))  # a re-render would rewrite it
    assert shapes_root(config, cache_dir=tmp_path) == root
    assert render_shapes(config, root) == root
    assert (root / "meta.json").stat().st_mtime_ns == 1
    assert (root / "images" / "00001.png").stat().st_mtime_ns == stamp[1]
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no "*.tmp-<pid>" left behind
    assert shapes_root(ShapesConfig(num_images=5, seed=10), cache_dir=tmp_path) != root


def test_zoo_cache_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    root = shapes_root(ShapesConfig(num_images=2))
    assert root.parent == tmp_path / "cache" and (root / "annotations.json").is_file()


def test_empty_existing_root_is_filled(tmp_path: Path) -> None:
    (tmp_path / "shapes").mkdir()
    root = render_shapes(ShapesConfig(num_images=2), tmp_path / "shapes")
    assert (root / "annotations.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]


def test_root_with_another_config_is_refused(tmp_path: Path) -> None:
    root = render_shapes(ShapesConfig(num_images=2), tmp_path / "shapes")
    with pytest.raises(FileExistsError, match="another config"):
        render_shapes(ShapesConfig(num_images=3), root)


@pytest.mark.parametrize(
    ("field", "value"),
    [("num_images", 0), ("max_objects", 0), ("max_size", 100), ("min_size", 40), ("background_noise", -1.0)],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"ShapesConfig\.\w+ must be .*got"):
        ShapesConfig(**{field: value})


def test_impossible_layout_fails_instead_of_looping(tmp_path: Path) -> None:
    crowded = ShapesConfig(num_images=1, image_size=16, min_objects=5, max_objects=5, min_size=14, max_size=16)
    with pytest.raises(ValueError, match="could not place"):
        render_shapes(crowded, tmp_path / "crowded")
    assert list(tmp_path.iterdir()) == []
