"""The Python inference API (``zoo.load(...).predict``) on every input kind, and ``zoo predict`` over a folder with
a broken file, drawn pictures in the input's file type and labels sized to the image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.cli import main
from zoo.engine import predict
from zoo.errors import ZooError
from zoo.inference import Model, resolve_device


@pytest.fixture(scope="module")
def model(trained_checkpoint) -> Model:
    return zoo.load(trained_checkpoint, batch_size=2)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> tuple[list[np.ndarray], list]:
    """Three grey 8x8 digit-like pictures (different sizes would do too) and their PNG files."""
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(3)]
    paths = []
    for i, a in enumerate(arrays):
        paths.append(folder / f"{i}.png")
        Image.fromarray(a).save(paths[-1])
    return arrays, paths


def _without_image(results: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "image"} for r in results]


def test_load_puts_the_model_on_the_resolved_device_in_eval_mode(model):
    assert model.device == resolve_device("auto")
    assert next(model.module.parameters()).device.type == model.device.type
    assert not model.module.training
    assert model.classes == {"label": tuple(str(d) for d in range(10))}
    with pytest.raises(ZooError, match="device"):
        resolve_device("gpu0")


def test_every_input_kind_gives_the_predictions_of_zoo_predict(model, pictures, trained_checkpoint):
    arrays, paths = pictures
    expected = _without_image(predict(trained_checkpoint, paths))  # what `zoo predict` writes, image key aside
    assert model.predict(paths) == expected  # a list of paths (two batches: batch_size=2)
    assert model.predict(paths[0].parent) == expected  # a folder
    assert model.predict(str(paths[0])) == expected[0]  # one path: one dict
    assert model.predict(Image.open(paths[0])) == expected[0]  # PIL
    assert model.predict(arrays[0]) == expected[0]  # numpy [H, W]
    assert model.predict(arrays[0][:, :, None]) == expected[0]  # numpy [H, W, 1]
    rgb = np.repeat(arrays[0][:, :, None], 3, axis=2)  # numpy [H, W, 3]: converted to the recipe's one channel
    assert model.predict(rgb) == expected[0]
    assert model.predict(np.stack(arrays)[..., None]) == expected  # numpy batch [N, H, W, C]
    assert model.predict(torch.from_numpy(np.stack(arrays))[:, None]) == expected  # uint8 tensor [N, C, H, W]
    assert model.predict([Image.open(paths[0]), arrays[1], str(paths[2])]) == expected  # mixed list
    assert model.predict(paths, batch_size=1) == expected  # batching does not change results


def test_a_float_tensor_is_a_batch_of_model_inputs(model, pictures):
    arrays, _ = pictures
    transform = model.recipe.transform(train=False, with_targets=False)
    batch = torch.stack([transform(image=a[:, :, None])["image"] for a in arrays])  # what a data loader yields
    direct = model.module(batch)
    results = model.predict(batch)
    assert [r["top_k"][0]["index"] for r in results] == direct.argmax(1).tolist()
    assert model.predict(batch[0]) == results[0]


@pytest.mark.parametrize("bad, message", [
    (np.zeros((8, 8, 3), np.float32), "numpy image is uint8"),
    (np.zeros((8, 8, 2), np.uint8), "numpy image is uint8"),
    (torch.zeros(2, 8, 8, dtype=torch.int32), "tensor image is uint8"),
    (torch.zeros(8, 8), "float tensor input is a batch"),
    (3.0, "cannot predict on a float"),
])
def test_inputs_of_another_kind_are_refused_saying_what_is_valid(model, bad, message):
    with pytest.raises(ZooError, match=message):
        model.predict(bad)


def test_zoo_predict_skips_a_broken_file_names_it_and_predicts_the_rest(trained_checkpoint, pictures, tmp_path,
                                                                        capsys):
    _, paths = pictures
    folder = tmp_path / "in"
    folder.mkdir()
    for p in paths:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_text("not an image")
    assert main(["predict", str(trained_checkpoint), str(folder), "--out", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    assert "broken.png" in err and "skipped 1 undecodable" in err
    results = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert [r["image"].rsplit("/", 1)[-1] for r in results] == ["0.png", "1.png", "2.png"]
    skipped = json.loads((tmp_path / "p" / "skipped.json").read_text())
    assert [s["image"].rsplit("/", 1)[-1] for s in skipped] == ["broken.png"] and skipped[0]["reason"]

    only_broken = tmp_path / "bad"
    only_broken.mkdir()
    (only_broken / "broken.png").write_text("not an image")
    assert main(["predict", str(trained_checkpoint), str(only_broken)]) == 2  # nothing could be predicted
    assert "none of the 1 image file(s) could be decoded" in capsys.readouterr().err


def test_drawn_pictures_keep_the_input_file_type(trained_checkpoint, pictures, tmp_path):
    arrays, _ = pictures
    Image.fromarray(arrays[0]).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(arrays[1]).save(tmp_path / "b.png")
    predict(trained_checkpoint, [tmp_path / "a.jpg", tmp_path / "b.png"], out=tmp_path / "p")
    drawn = sorted((tmp_path / "p" / "images").iterdir())
    assert [p.name for p in drawn] == ["00000_a.jpg", "00001_b.png"]
    assert [Image.open(p).format for p in drawn] == ["JPEG", "PNG"]


def test_labels_grow_with_the_image_and_classification_draws_the_top_k(model):
    from heads.classification import draw_class

    prediction = {"top_k": [{"class": str(k), "index": k, "prob": 0.5 / (k + 1)} for k in range(3)]}
    small = draw_class(np.zeros((8, 8, 1), np.uint8), prediction, None, model.classes["label"])
    large = draw_class(np.zeros((512, 512, 3), np.uint8), prediction, None, model.classes["label"])
    small_strip, large_strip = small.shape[0] - 96, large.shape[0] - 512  # 8 px is enlarged to 96 px first
    assert large_strip >= 3 * 18 > small_strip  # three lines (top-3) of text ~1/28 of the image side high
    one = draw_class(np.zeros((512, 512, 3), np.uint8), {"top_k": prediction["top_k"][:1]}, None, ["0"])
    assert one.shape[0] - 512 < large_strip  # each of the top-k gets a line
