"""Detection data: the COCO loader's safety checks, every format reader on small generated files, bad inputs, the
task hooks through an albumentations pipeline, and EXIF-rotated images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data.base import TransformedDataset
from zoo.data.coco import CocoFormatError, load_coco
from zoo.data.detection import CocoDetectionData, ShapesDetectionData, VocData, YoloFolderData
from zoo.data.shapes import SHAPE_CLASSES
from zoo.data.targets import SamplePreparer, collate_samples, compose_kwargs_for
from zoo.errors import RecipeError, ZooError
from zoo.recipe import Augment


def _image(path: Path, size: tuple[int, int] = (32, 48), *, box: tuple[int, int, int, int] | None = None) -> None:
    """An ``H x W`` grey PNG, white inside the xyxy ``box``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((*size, 3), 40, np.uint8)
    if box:
        x1, y1, x2, y2 = box
        pixels[y1:y2, x1:x2] = 255
    Image.fromarray(pixels).save(path)


def _coco(tmp_path: Path, annotations: list[dict], *, images: list[dict] | None = None, name: str = "a.json",
          write_images: bool = True) -> Path:
    images = images or [{"id": 1, "file_name": "img/1.png", "height": 32, "width": 48},
                        {"id": 2, "file_name": "img/2.png", "height": 32, "width": 48}]
    if write_images:
        for image in images:
            _image(tmp_path / image["file_name"], (image["height"], image["width"]))
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}]}))
    return path


def _ann(id: int, image_id: int, bbox: list[float], category_id: int = 1) -> dict:
    return {"id": id, "image_id": image_id, "category_id": category_id, "bbox": bbox}


# --- load_coco -------------------------------------------------------------------------------------------------------


def test_load_coco_sorts_categories_and_renumbers_annotation_id_zero(tmp_path):
    path = _coco(tmp_path, [_ann(0, 1, [1, 2, 3, 4]), _ann(5, 2, [0, 0, 8, 8], 3)])
    original = path.read_text()
    data = load_coco(path, tmp_path)
    assert data.classes == ("dog", "cat") and data.label_of == {1: 0, 3: 1}
    assert [(a["id"], a["orig_id"]) for a in data.coco.loadAnns(data.coco.getAnnIds())] == [(1, 0), (2, 5)]
    assert [i.path for i in data.images] == [(tmp_path / "img" / f"{i}.png").resolve() for i in (1, 2)]
    assert path.read_text() == original  # the user's file is never modified


@pytest.mark.parametrize("file_name", ["../outside.png", "img/../../outside.png", "/etc/passwd", "C:/x.png"])
def test_load_coco_refuses_file_names_outside_the_root(tmp_path, file_name):
    root = tmp_path / "root"
    root.mkdir()
    _image(tmp_path / "outside.png")
    path = _coco(root, [], images=[{"id": 7, "file_name": file_name, "height": 32, "width": 48}], write_images=False)
    with pytest.raises(CocoFormatError, match=r"a\.json.*image id 7.*" + repr(file_name).replace(".", r"\.")):
        load_coco(path, root)


def test_load_coco_missing_image_and_bad_references(tmp_path):
    path = _coco(tmp_path, [], images=[{"id": 1, "file_name": "img/gone.png", "height": 4, "width": 4}],
                 write_images=False)
    with pytest.raises(CocoFormatError, match=r"image id 1.*gone\.png.*does not exist"):
        load_coco(path, tmp_path)
    with pytest.raises(CocoFormatError, match=r"annotation id 9 .*category_id 2; valid category ids: \[1, 3\]"):
        load_coco(_coco(tmp_path, [_ann(9, 1, [0, 0, 4, 4], 2)]), tmp_path)
    with pytest.raises(CocoFormatError, match=r"annotation id 4 .*image id 99"):
        load_coco(_coco(tmp_path, [_ann(4, 99, [0, 0, 4, 4])]), tmp_path)
    with pytest.raises(CocoFormatError, match=r"data\.val_json: COCO file .*nope\.json.* does not exist"):
        load_coco(tmp_path / "nope.json", tmp_path, field="data.val_json")


# --- CocoDetectionData: bad inputs -------------------------------------------------------------------------------------


def _coco_data(tmp_path: Path, annotations: list[dict], **kwargs) -> CocoDetectionData:
    path = _coco(tmp_path, annotations)
    return CocoDetectionData(images=str(tmp_path), train_json=str(path), val_json=str(path), **kwargs)


def test_coco_clips_drops_and_keeps_background(tmp_path):
    data = _coco_data(tmp_path, [_ann(1, 1, [40, 20, 20, 20]),  # partly outside the 48x32 image: clipped
                                 _ann(0, 1, [5, 5, 0, 7], 3),  # zero width: dropped with its label
                                 _ann(3, 1, [60, 5, 4, 4]),  # wholly outside: nothing left, dropped
                                 _ann(4, 1, [1, 2, 3, 4], 3)])  # image 2 has none: background
    with pytest.warns(UserWarning) as caught:
        splits = data.setup()
    messages = " | ".join(str(w.message) for w in caught)
    assert "1 box(es) clipped" in messages and "annotation id 1 " in messages
    assert "2 box(es) dropped" in messages and "annotation id 0 " in messages and "annotation id 3 " in messages
    assert len(splits.skipped) == 4  # the dropped boxes of train and val (the test set is the val set here)
    image, targets = splits.train.load(0)
    target = targets["boxes"]
    assert image.shape == (32, 48, 3) and target["orig_size"] == (32, 48) and target["image_id"] == 1
    np.testing.assert_array_equal(target["boxes"], np.float32([[40, 20, 48, 32], [1, 2, 4, 6]]))
    np.testing.assert_array_equal(target["labels"], [0, 1])
    background = splits.train.load(1)[1]["boxes"]
    assert background["boxes"].shape == (0, 4) and background["boxes"].dtype == np.float32
    assert background["labels"].shape == (0,) and background["labels"].dtype == np.int64
    assert len(splits.test) == len(splits.val) == 2  # test_json None: the validation set is the test set


def test_coco_preflight_names_the_field(tmp_path):
    with pytest.raises(RecipeError, match=r"data\.train_json: is not set"):
        CocoDetectionData(images=str(tmp_path)).preflight()
    with pytest.raises(RecipeError, match=r"data\.val_json: file .*missing\.json"):
        CocoDetectionData(images=str(tmp_path), train_json=str(_coco(tmp_path, [])),
                          val_json=str(tmp_path / "missing.json")).preflight()


def test_coco_splits_must_share_categories(tmp_path):
    train = _coco(tmp_path, [])
    val = tmp_path / "val.json"
    val.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "horse"}]}))
    data = CocoDetectionData(images=str(tmp_path), train_json=str(train), val_json=str(val))
    with pytest.raises(RecipeError, match=r"data\.val_json: .*horse.*same categories"):
        data.setup()


def test_exif_rotated_image_keeps_boxes_on_the_displayed_pixels(tmp_path):
    displayed = np.full((40, 20, 3), 40, np.uint8)  # H=40, W=20 as a viewer shows it
    displayed[25:35, 3:11] = (255, 0, 0)
    raw = Image.fromarray(displayed).transpose(Image.ROTATE_90)  # stored sideways (W=40, H=20) ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... with the EXIF tag that says "rotate 90° clockwise to display"
    (tmp_path / "img").mkdir()
    raw.save(tmp_path / "img" / "1.png", exif=exif)
    path = _coco(tmp_path, [_ann(1, 1, [3, 25, 8, 10])], write_images=False,
                 images=[{"id": 1, "file_name": "img/1.png", "height": 40, "width": 20}])
    splits = CocoDetectionData(images=str(tmp_path), train_json=str(path), val_json=str(path)).setup()
    image, targets = splits.train.load(0)
    target = targets["boxes"]
    assert image.shape == (40, 20, 3)
    x1, y1, x2, y2 = target["boxes"][0].astype(int)
    assert (image[y1:y2, x1:x2] == (255, 0, 0)).all() and (image == (255, 0, 0)).all(-1).sum() == 80


# --- the synthetic shapes set ----------------------------------------------------------------------------------------


def test_shapes_detection_matches_its_annotations_and_splits_deterministically(tmp_path):
    data = ShapesDetectionData(num_images=30, val_fraction=0.2, test_fraction=0.2, cache_dir=str(tmp_path))
    splits = data.setup()
    assert splits.classes == {"boxes": SHAPE_CLASSES}
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 6, 6)
    again = ShapesDetectionData(num_images=30, val_fraction=0.2, test_fraction=0.2, cache_dir=str(tmp_path)).setup()
    assert [r.image_id for r in again.test.source.records] == [r.image_id for r in splits.test.source.records]
    coco = json.loads(next(tmp_path.glob("shapes-*/annotations.json")).read_text())
    counts = {}
    for ann in coco["annotations"]:
        counts.setdefault(ann["image_id"], []).append(ann)
    assert max(len(v) for v in counts.values()) > 1  # several objects per image
    image, targets = splits.test.load(0)
    target = targets["boxes"]
    expected = counts[target["image_id"]]
    assert image.shape == (64, 64, 3) and len(target["boxes"]) == len(expected)
    x, y, w, h = expected[0]["bbox"]
    np.testing.assert_allclose(target["boxes"][0], [x, y, x + w, y + h])
    assert target["labels"][0] == expected[0]["category_id"] - 1


def test_shapes_single_object_variant_and_bad_sizes(tmp_path):
    splits = ShapesDetectionData(num_images=12, max_objects=1, cache_dir=str(tmp_path)).setup()
    assert all(len(splits.train.load(i)[1]["boxes"]["boxes"]) == 1 for i in range(len(splits.train)))
    with pytest.raises(RecipeError, match="max_size"):
        ShapesDetectionData(render_size=32, max_size=40)


# --- the task hooks through a pipeline ---------------------------------------------------------------------------------


def test_hooks_resize_flip_and_collate(tmp_path):
    import albumentations as A

    splits = ShapesDetectionData(num_images=12, cache_dir=str(tmp_path)).setup()
    pipeline = Augment(train=(A.HorizontalFlip(p=1.0),)).compose(train=True, size=32, mean=(0.5,) * 3,
                                                                 std=(0.25,) * 3, **compose_kwargs_for(["boxes"]))
    dataset = TransformedDataset(splits.train, SamplePreparer(pipeline, ["boxes"]))
    images, batch = collate_samples([dataset[0], dataset[1]])
    assert set(batch) == {"boxes"} and batch["boxes"].index.tolist() == [0, 1]
    targets = batch["boxes"].value
    assert images.shape == (2, 3, 32, 32) and len(targets) == 2
    raw = splits.train.load(0)[1]["boxes"]
    target = targets[0]
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["size"] == (32, 32) and target["orig_size"] == (64, 64)
    x1, y1, x2, y2 = raw["boxes"].T / 2  # resized 64 -> 32, then flipped left-right
    expected = np.stack([32 - x2, y1, 32 - x1, y2], axis=1)
    np.testing.assert_allclose(target["boxes"].numpy(), expected, atol=1e-4)
    np.testing.assert_array_equal(target["labels"].numpy(), raw["labels"])


def test_hooks_keep_background_images_empty():
    pipeline = Augment().compose(train=False, size=16, mean=(0.5,) * 3, std=(0.25,) * 3,
                                 **compose_kwargs_for(["boxes"]))
    target = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64), "image_id": 3,
              "orig_size": (20, 20)}
    image, finished = SamplePreparer(pipeline, ["boxes"])(np.zeros((20, 20, 3), np.uint8), {"boxes": target})
    out = finished["boxes"]
    assert image.shape == (3, 16, 16) and out["boxes"].shape == (0, 4) and out["labels"].shape == (0,)


# --- YOLO txt folders --------------------------------------------------------------------------------------------------


def _yolo(root: Path, labels: dict[str, str], *, subset: str = "") -> None:
    for stem, text in labels.items():
        _image(root / "images" / subset / f"{stem}.png", (40, 80))
        if text is not None:
            (root / "labels" / subset).mkdir(parents=True, exist_ok=True)
            (root / "labels" / subset / f"{stem}.txt").write_text(text)


def test_yolo_reads_normalised_boxes_clips_and_drops(tmp_path):
    _yolo(tmp_path, {"a": "1 0.5 0.5 0.25 0.5\n\n0 0.95 0.5 0.2 0.2\n2 0.3 0.3 0 0.1\n", "b": None},
          subset="train")
    _yolo(tmp_path, {"c": "0 0.5 0.5 0.5 0.5\n"}, subset="val")
    _yolo(tmp_path, {"d": "2 0.5 0.5 0.5 0.5\n"}, subset="test")
    with pytest.warns(UserWarning) as caught:
        splits = YoloFolderData(root=str(tmp_path), names=("x", "y", "z")).setup()
    messages = " | ".join(str(w.message) for w in caught)
    assert "a.txt:3" in messages and "clipped" in messages and "a.txt:4" in messages and "dropped" in messages
    assert splits.classes == {"boxes": ("x", "y", "z")} and (len(splits.train), len(splits.val), len(splits.test)) == (2, 1, 1)
    target = splits.train.load(0)[1]["boxes"]  # 80x40 image: cx 0.95 w 0.2 -> x 68..84, clipped to 80
    np.testing.assert_allclose(target["boxes"], [[30, 10, 50, 30], [68, 16, 80, 24]], atol=1e-4)
    np.testing.assert_array_equal(target["labels"], [1, 0])
    assert splits.train.load(1)[1]["boxes"]["boxes"].shape == (0, 4)  # no label file: background
    assert splits.test.load(0)[1]["boxes"]["labels"].tolist() == [2]


def test_yolo_flat_folder_gets_a_seeded_split(tmp_path):
    _yolo(tmp_path, {f"i{n}": f"{n % 2} 0.5 0.5 0.2 0.2\n" for n in range(10)})
    data = YoloFolderData(root=str(tmp_path), names=("x", "y"), val_fraction=0.2, test_fraction=0.2)
    splits = data.setup()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 2)
    assert [r.path for r in data.setup().test.source.records] == [r.path for r in splits.test.source.records]


def test_yolo_errors_name_file_line_and_range(tmp_path):
    _yolo(tmp_path, {"a": "0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.1 0.1\n"})
    (tmp_path / "classes.txt").write_text("p\nq\nr\n")
    with pytest.raises(ZooError, match=r"a\.txt:2: class id 3 out of range; valid ids are 0\.\.2"):
        YoloFolderData(root=str(tmp_path)).setup()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5\n")
    with pytest.raises(ZooError, match=r"a\.txt:1: expected 'class cx cy w h'"):
        YoloFolderData(root=str(tmp_path)).setup()
    (tmp_path / "labels" / "a.txt").write_text("")
    (tmp_path / "labels" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ZooError, match=r"ghost\.txt: no image"):
        YoloFolderData(root=str(tmp_path)).setup()
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(RecipeError, match=r"data\.names"):
        YoloFolderData(root=str(tmp_path)).setup()


# --- Pascal VOC ----------------------------------------------------------------------------------------------------------


def _voc(root: Path, stem: str, objects: list[tuple[str, int, tuple[int, int, int, int]]], *,
         filename: str | None = None, write_image: bool = True) -> None:
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    if write_image:
        _image(root / "JPEGImages" / f"{stem}.png", (30, 50))
    body = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, d, b in objects)
    (root / "Annotations" / f"{stem}.xml").write_text(
        f"<annotation><filename>{filename or stem + '.png'}</filename><size><width>50</width><height>30</height>"
        f"</size>{body}</annotation>")


def test_voc_reads_boxes_difficult_and_gathers_classes(tmp_path):
    _voc(tmp_path, "a", [("dog", 0, (1, 1, 10, 20)), ("cat", 1, (5, 5, 9, 9)), ("cat", 0, (40, 2, 60, 12))])
    _voc(tmp_path, "b", [])
    with pytest.warns(UserWarning, match=r"1 box\(es\) clipped.*a\.xml object 1"):
        splits = VocData(root=str(tmp_path), val_fraction=0, test_fraction=0).setup()
    assert splits.classes == {"boxes": ("cat", "dog")}
    target = splits.train.load(0)[1]["boxes"]
    np.testing.assert_array_equal(target["boxes"], np.float32([[0, 0, 10, 20], [39, 1, 50, 12]]))
    np.testing.assert_array_equal(target["labels"], [1, 0])  # the difficult cat is left out
    with_difficult = VocData(root=str(tmp_path), include_difficult=True, val_fraction=0, test_fraction=0)
    with pytest.warns(UserWarning):
        assert len(with_difficult.setup().train.load(0)[1]["boxes"]["boxes"]) == 3


def test_voc_errors(tmp_path):
    _voc(tmp_path, "a", [("horse", 0, (1, 1, 10, 20))])
    with pytest.raises(ZooError, match=r"a\.xml: object 0 has class 'horse', not one of data\.classes"):
        VocData(root=str(tmp_path), classes=("cat", "dog")).setup()
    _voc(tmp_path, "a", [], filename="../../secret.png")
    with pytest.raises(CocoFormatError, match=r"a\.xml.*outside"):
        VocData(root=str(tmp_path)).setup()
    _voc(tmp_path, "a", [], filename="gone.png")
    with pytest.raises(ZooError, match=r"a\.xml: image file .*gone\.png.* does not exist"):
        VocData(root=str(tmp_path)).setup()


# --- duplicate ids ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("categories, message", [
    ([{"id": 1, "name": "cat"}, {"id": 1, "name": "dog"}], r"a\.json.*: category id\(s\) 1 appear more than once"),
    ([{"id": 1, "name": "cat"}, {"id": 2, "name": "cat"}], r"a\.json.*: category name\(s\) 'cat' appear more than once"),
])
def test_duplicate_coco_category_ids_or_names_are_errors(tmp_path, categories, message):
    path = _coco(tmp_path, [_ann(1, 1, [1, 2, 3, 4])])
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "categories": categories}))
    with pytest.raises(CocoFormatError, match=message):
        load_coco(path, tmp_path)


def test_yolo_images_sharing_a_stem_are_an_error(tmp_path):
    """0.jpg and 0.png would both take labels/0.txt; one image would be kept with the other's label."""
    _yolo(tmp_path, {"0": "0 0.5 0.5 0.2 0.2\n", "1": ""})
    _image(tmp_path / "images" / "0.jpg", (40, 80))
    with pytest.raises(ZooError, match=r"images '0\.jpg' and '0\.png' share the id '0'"):
        YoloFolderData(root=str(tmp_path), names=("x",)).setup()


def test_coco_without_image_sizes_checks_boxes_against_the_image_header(tmp_path):
    """No width/height in the entries: the 48x32 header size, not infinity, bounds the boxes."""
    images = [{"id": 1, "file_name": "img/1.png"}, {"id": 2, "file_name": "img/2.png"}]
    for image in images:
        _image(tmp_path / image["file_name"], (32, 48))
    path = _coco(tmp_path, [_ann(1, 1, [1, 2, 3, 4]), _ann(2, 1, [0, 0, 1e30, 1e30]),
                            _ann(3, 1, [float("inf"), 0, 5, 5]), _ann(4, 1, [40, 20, 20, 20])],
                 images=images, write_images=False)
    data = CocoDetectionData(images=str(tmp_path), train_json=str(path), val_json=str(path))
    with pytest.warns(UserWarning) as caught:
        splits = data.setup()
    messages = " | ".join(str(w.message) for w in caught)
    assert "2 box(es) dropped with their labels: non-finite or more than an image size outside" in messages
    assert "annotation id 2 " in messages and "annotation id 3 " in messages and "undecodable" not in messages
    target = splits.train.load(0)[1]["boxes"]
    np.testing.assert_array_equal(target["boxes"], np.float32([[1, 2, 4, 6], [40, 20, 48, 32]]))
    assert sum("absurd box dropped" in reason for _, reason in splits.skipped) == 4  # train and val


# --- images checked at setup ------------------------------------------------------------------------------------------


def test_undecodable_images_are_skipped_and_counted_at_setup_in_coco_and_yolo(tmp_path):
    coco = tmp_path / "coco"
    path = _coco(coco, [_ann(1, 1, [1, 2, 3, 4]), _ann(2, 2, [1, 2, 3, 4])])
    (coco / "img" / "2.png").write_bytes((coco / "img" / "2.png").read_bytes()[:60])  # truncated
    with pytest.warns(UserWarning, match=r"skipping undecodable image .*2\.png"):
        splits = CocoDetectionData(images=str(coco), train_json=str(path), val_json=str(path)).setup()
    assert len(splits.train) == 1 and [p.name for p, _ in splits.skipped] == ["2.png"]
    splits.train.load(0)  # what is left loads
    yolo = tmp_path / "yolo"
    _yolo(yolo, {f"i{n}": "0 0.5 0.5 0.2 0.2\n" for n in range(6)})
    (yolo / "images" / "i3.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.warns(UserWarning, match=r"skipping undecodable image .*i3\.png"):
        splits = YoloFolderData(root=str(yolo), names=("x",), val_fraction=0.2, test_fraction=0.2).setup()
    assert len(splits.train) + len(splits.val) + len(splits.test) == 5
    assert [p.name for p, _ in splits.skipped] == ["i3.png"]


def test_an_image_size_that_disagrees_with_the_coco_entry_is_an_error_at_setup(tmp_path):
    images = [{"id": 1, "file_name": "img/1.png", "height": 32, "width": 48},
              {"id": 2, "file_name": "img/2.png", "height": 32, "width": 48}]
    path = _coco(tmp_path, [_ann(1, 1, [1, 2, 3, 4])], images=images)
    _image(tmp_path / "img" / "2.png", (20, 20))
    with pytest.raises(ZooError, match=r"2\.png: the annotations give size HxW \(32, 48\), the image .* is \(20, 20\)"):
        CocoDetectionData(images=str(tmp_path), train_json=str(path), val_json=str(path)).setup()
