"""Image-folder adapter: layouts, splits, and every bad input named in the foundation issue."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from tests.conftest import tiny_folder_recipe, write_class_folders
from zoo.data import ImageFolderData, ShapesData
from zoo.engine import train
from zoo.engine.datamodule import ZooDataModule
from zoo.errors import RecipeError, ZooError


def _digest(folder):
    return {p.relative_to(folder): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_seeded_stratified_split(tmp_path):
    write_class_folders(tmp_path, {"cat": 20, "dog": 20})
    data = ImageFolderData(root=str(tmp_path), val_fraction=0.2, test_fraction=0.2)
    a, b = data.setup(), data.setup()
    assert a.classes == {"label": ("cat", "dog")}
    assert (len(a.train), len(a.val), len(a.test)) == (24, 8, 8)
    assert a.test.key == "label"  # a single-target adapter's sources are keyed by "label"
    assert a.test.source.files == b.test.source.files  # same seed, same split
    assert sorted(a.test.source.labels) == [0] * 4 + [1] * 4  # stratified
    assert [a.test.load(i)[1] for i in range(len(a.test))] == [{"label": y} for y in a.test.source.labels]
    other = ImageFolderData(root=str(tmp_path), val_fraction=0.2, test_fraction=0.2, split_seed=1).setup()
    assert other.test.source.files != a.test.source.files
    assert not set(a.train.source.files) & set(a.test.source.files)


def test_split_folders_layout(tmp_path):
    write_class_folders(tmp_path / "train", {"a": 4, "b": 4})
    write_class_folders(tmp_path / "test", {"a": 2, "b": 2})
    splits = ImageFolderData(root=str(tmp_path), val_fraction=0.25).setup()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 4)
    write_class_folders(tmp_path / "val", {"a": 1, "c": 1})
    with pytest.raises(ZooError, match="differ from the training split"):
        ImageFolderData(root=str(tmp_path)).setup()


def test_bad_files_are_skipped_counted_and_untouched(tmp_path, recwarn):
    write_class_folders(tmp_path, {"a": 6, "b": 6})
    good = tmp_path / "a" / "0.png"
    (tmp_path / "a" / "truncated.png").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (tmp_path / "b" / "notes.jpg").write_text("not an image")
    before = _digest(tmp_path)
    splits = ImageFolderData(root=str(tmp_path), val_fraction=0.2, test_fraction=0.2).setup()
    assert sorted(p.name for p, _ in splits.skipped) == ["notes.jpg", "truncated.png"]
    assert len(splits.train) + len(splits.val) + len(splits.test) == 12
    messages = [str(w.message) for w in recwarn]
    assert any("truncated.png" in m for m in messages) and any("notes.jpg" in m for m in messages)
    assert _digest(tmp_path) == before  # source files never modified


def test_skipped_count_is_reported_by_a_run(tmp_path, capsys):
    write_class_folders(tmp_path / "data", {"a": 8, "b": 8})
    (tmp_path / "data" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.warns(UserWarning, match="broken.png"):
        train(tiny_folder_recipe(tmp_path / "data"), tmp_path / "run")
    printed = capsys.readouterr().out
    assert "skipped 1 input(s) (broken.png: " in printed and "data.json" in printed
    import json
    assert json.loads((tmp_path / "run" / "data.json").read_text())["skipped"][0][0].endswith("broken.png")


def test_empty_class_folder_is_an_error(tmp_path):
    write_class_folders(tmp_path, {"a": 3})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooError, match="class folder .*empty holds no images"):
        ImageFolderData(root=str(tmp_path)).setup()


def test_no_class_folders_is_an_error(tmp_path):
    with pytest.raises(ZooError, match="no class subfolders"):
        ImageFolderData(root=str(tmp_path)).setup()


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "I;16", "LA"])
def test_any_image_mode_becomes_the_model_channels(tmp_path, mode):
    if mode == "I;16":
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            for i in range(4):
                Image.fromarray(np.full((16, 16), 1000 * (i + 1), np.uint16)).save(tmp_path / name / f"{i}.png")
    else:
        write_class_folders(tmp_path, {"a": 4, "b": 4}, mode=mode)
    for channels in (1, 3):
        recipe = tiny_folder_recipe(tmp_path, **{"data.channels": channels, "model.backbone.in_chans": channels,
                                                 "data.mean": (0.5,) * channels, "data.std": (0.25,) * channels})
        dm = ZooDataModule(recipe, recipe.data.setup())
        images, targets = next(iter(dm.train_dataloader()))
        assert images.shape == (4, channels, 16, 16) and images.dtype.is_floating_point
        labels = targets["label"].value
        assert labels.dtype.is_signed


def test_exif_rotated_file_is_upright(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    wide = np.zeros((8, 24, 3), np.uint8)  # stored 24 wide, 8 high; EXIF says rotate 90 degrees
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(wide).save(tmp_path / "a" / "r.jpg", exif=exif)
    Image.fromarray(wide).save(tmp_path / "b" / "r.jpg")
    splits = ImageFolderData(root=str(tmp_path), val_fraction=0, test_fraction=0).setup()
    shapes = sorted(splits.train.load(i)[0].shape for i in range(len(splits.train)))
    assert shapes == [(8, 24, 3), (24, 8, 3)]


def test_head_classes_must_match_folder_classes(tmp_path):
    from zoo.engine.run import prepare_data

    write_class_folders(tmp_path, {"a": 4, "b": 4, "c": 4})
    with pytest.raises(RecipeError, match="model.head.num_classes: is 5 but the data has 3 classes"):
        prepare_data(tiny_folder_recipe(tmp_path, **{"model.head.num_classes": 5}))


def test_shapes_classification_view(tmp_path):
    splits = ShapesData(num_images=60, cache_dir=str(tmp_path)).setup()
    assert splits.classes == {"label": ("circle", "square", "triangle")}
    assert len(splits.train) + len(splits.val) + len(splits.test) == 60
    image, targets = splits.train.load(0)
    assert set(targets) == {"label"}
    assert image.shape == (64, 64, 3) and targets["label"] in (0, 1, 2)


def test_class_folder_of_only_undecodable_files_is_an_error(tmp_path):
    """Not a class of 0 samples (a 3-way head for 2 real classes): the empty-class-folder error."""
    write_class_folders(tmp_path, {"a": 4, "b": 4})
    (tmp_path / "broken").mkdir()
    for i in range(3):
        (tmp_path / "broken" / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.warns(UserWarning), pytest.raises(ZooError, match=r"class folder .*broken holds no images that "
                                                                    r"decode \(3 undecodable"):
        ImageFolderData(root=str(tmp_path)).setup()


def test_a_link_out_of_the_data_root_is_refused_unless_asked_for(tmp_path):
    data = write_class_folders(tmp_path / "data", {"a": 6, "b": 6})
    outside = write_class_folders(tmp_path / "elsewhere", {"x": 1}) / "x"
    target = next(outside.iterdir())
    (data / "a" / "linked.png").symlink_to(target)
    with pytest.raises(ZooError, match=r"linked.png leads outside the data folder .*data.follow_symlinks=True"):
        ImageFolderData(root=str(data)).setup()
    splits = ImageFolderData(root=str(data), follow_symlinks=True).setup()
    assert len(splits.train) + len(splits.val) + len(splits.test) == 13
    (data / "b" / "inside.png").symlink_to(data / "b" / sorted(p.name for p in (data / "b").iterdir())[0])
    (data / "a" / "linked.png").unlink()
    ImageFolderData(root=str(data)).setup()  # a link that stays inside the root is fine
