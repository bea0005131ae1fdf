"""zoo.data.images: every Pillow mode decodes to uint8 [H, W, C]; bad files fail naming the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from zoo.data.images import IMAGE_EXTENSIONS, ImageDecodeError, load_image, scan_images
from zoo.errors import ZooError

RED, GREEN = (230, 30, 30), (30, 200, 40)


def _save(directory: Path, name: str, image: Image.Image, **params) -> Path:
    path = directory / name
    image.save(path, **params)
    return path


def _mode(path: Path) -> str:
    with Image.open(path) as image:
        return image.mode


def _check_contract(array: np.ndarray, *, height: int, width: int, channels: int) -> None:
    assert array.dtype == np.uint8
    assert array.shape == (height, width, channels)
    assert array.flags.c_contiguous and array.flags.writeable


def test_rgb_png_round_trips_exactly(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    path = _save(tmp_path, "rgb.png", Image.fromarray(pixels))
    out = load_image(path)
    _check_contract(out, height=6, width=9, channels=3)
    np.testing.assert_array_equal(out, pixels)


def test_grey_l_gives_one_channel_or_replicated_three(tmp_path: Path) -> None:
    pixels = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    path = _save(tmp_path, "grey.png", Image.fromarray(pixels))
    one = load_image(path, channels=1)
    three = load_image(path, channels=3)
    _check_contract(one, height=4, width=5, channels=1)
    _check_contract(three, height=4, width=5, channels=3)
    np.testing.assert_array_equal(one[:, :, 0], pixels)
    for c in range(3):
        np.testing.assert_array_equal(three[:, :, c], pixels)


def test_bilevel_mode_1_maps_to_0_and_255(tmp_path: Path) -> None:
    image = Image.new("1", (4, 2), 0)
    image.putpixel((1, 0), 1)
    out = load_image(_save(tmp_path, "bw.png", image), channels=1)
    assert set(np.unique(out).tolist()) == {0, 255}
    assert out[0, 1, 0] == 255 and out[1, 1, 0] == 0


def test_palette_with_transparent_index_composites_onto_black(tmp_path: Path) -> None:
    image = Image.new("P", (4, 2), 0)
    image.putpalette([*RED, *GREEN])
    image.putpixel((3, 1), 1)
    path = _save(tmp_path, "pal.png", image, transparency=0)
    out = load_image(path)
    assert tuple(out[1, 3]) == GREEN
    assert not out[0, 0].any()  # index 0 is fully transparent -> black


def test_palette_with_alpha_bytes_is_alpha_composited(tmp_path: Path) -> None:
    image = Image.new("P", (2, 2), 0)
    image.putpalette([*RED, *GREEN])
    out = load_image(_save(tmp_path, "pal_alpha.png", image, transparency=bytes([128, 255])))
    np.testing.assert_allclose(out[0, 0], np.array(RED) * 128 / 255, atol=1)


def test_palette_without_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (3, 3), 1)
    image.putpalette([*RED, *GREEN])
    out = load_image(_save(tmp_path, "pal.gif", image))
    assert (out == GREEN).all()


def test_la_alpha_composites_grey_onto_black(tmp_path: Path) -> None:
    image = Image.new("LA", (3, 2), (200, 128))
    out = load_image(_save(tmp_path, "la.png", image), channels=1)
    _check_contract(out, height=2, width=3, channels=1)
    assert (out == 100).all()  # 200 * 128 / 255 = 100.4


def test_rgba_alpha_composites_onto_black(tmp_path: Path) -> None:
    pixels = np.zeros((1, 3, 4), np.uint8)
    pixels[0, 0] = (200, 100, 50, 255)  # opaque: unchanged
    pixels[0, 1] = (200, 100, 50, 0)  # transparent: black
    pixels[0, 2] = (200, 100, 50, 51)  # 20 % alpha
    out = load_image(_save(tmp_path, "rgba.png", Image.fromarray(pixels)))
    assert out[0, 0].tolist() == [200, 100, 50]
    assert out[0, 1].tolist() == [0, 0, 0]
    assert out[0, 2].tolist() == [40, 20, 10]


def test_cmyk_jpeg_converts_to_rgb(tmp_path: Path) -> None:
    image = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    path = _save(tmp_path, "cmyk.jpg", image, quality=95)
    out = load_image(path)
    _check_contract(out, height=16, width=16, channels=3)
    red, green, blue = out.reshape(-1, 3).mean(axis=0)
    assert red > 240 and green < 15 and blue < 15


def test_16bit_png_is_scaled_by_257(tmp_path: Path) -> None:
    pixels = np.array([[0, 257 * 100, 65535]], np.uint16)
    path = _save(tmp_path, "deep.png", Image.fromarray(pixels))
    assert _mode(path).startswith("I;16")
    out = load_image(path, channels=1)
    assert out[0, :, 0].tolist() == [0, 100, 255]


def test_32bit_int_uses_16bit_scale_when_values_fit(tmp_path: Path) -> None:
    path = _save(tmp_path, "int16.tif", Image.fromarray(np.array([[0, 257 * 3, 65535]], np.int32)))
    assert _mode(path) == "I"
    assert load_image(path, channels=1)[0, :, 0].tolist() == [0, 3, 255]


def test_32bit_int_beyond_16bit_uses_full_range(tmp_path: Path) -> None:
    pixels = np.array([[-5, 2**30, 2**31 - 1]], np.int32)
    out = load_image(_save(tmp_path, "int32.tif", Image.fromarray(pixels)), channels=1)
    assert out[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0.0, 0.5, 1.0, -0.2], [0, 128, 255, 0]), ([0.0, 10.4, 300.0, float("nan")], [0, 10, 255, 0])],
    ids=["unit_range", "byte_range"],
)
def test_float_mode_f(tmp_path: Path, values: list[float], expected: list[int]) -> None:
    path = _save(tmp_path, "float.tif", Image.fromarray(np.array([values], np.float32)))
    assert _mode(path) == "F"
    assert load_image(path, channels=1)[0, :, 0].tolist() == expected


def test_rgb_to_one_channel_uses_pillow_luminance(tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = _save(tmp_path, "rgb.png", Image.fromarray(pixels))
    expected = np.asarray(Image.fromarray(pixels).convert("L"))
    np.testing.assert_array_equal(load_image(path, channels=1)[:, :, 0], expected)


@pytest.mark.parametrize(("orientation", "white_at_top"), [(6, True), (8, False)])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, white_at_top: bool) -> None:
    image = Image.new("L", (40, 20), 0)  # W=40, H=20: left half white, right half black
    image.paste(255, (0, 0, 20, 20))
    exif = image.getexif()
    exif[0x0112] = orientation  # 6: rotate 90 deg clockwise to display; 8: counter-clockwise
    out = load_image(_save(tmp_path, "rot.jpg", image, exif=exif, quality=95))
    _check_contract(out, height=40, width=20, channels=3)  # displayed portrait
    top, bottom = out[:18].mean(), out[22:].mean()
    assert (top > 240 and bottom < 15) if white_at_top else (top < 15 and bottom > 240)


def test_bad_channels_raise_naming_the_value(tmp_path: Path) -> None:
    path = _save(tmp_path, "ok.png", Image.new("RGB", (2, 2)))
    with pytest.raises(ValueError, match="got 4"):
        load_image(path, channels=4)


def _truncated(tmp_path: Path, name: str) -> Path:
    pixels = np.random.default_rng(2).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    full = _save(tmp_path, "full_" + name, Image.fromarray(pixels))
    data = full.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("name", ["cut.png", "cut.jpg"])
def test_truncated_file_raises_naming_the_file(tmp_path: Path, name: str) -> None:
    path = _truncated(tmp_path, name)
    with pytest.raises(ImageDecodeError, match=name) as caught:
        load_image(path)
    assert caught.value.path == path
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, ZooError)


def test_text_file_named_png_raises_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_text("not an image\n")
    with pytest.raises(ImageDecodeError, match="x.png"):
        load_image(path)


def test_missing_file_raises_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="absent.png"):
        load_image(tmp_path / "absent.png")


def test_truncated_images_are_not_globally_allowed() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_source_files_are_never_modified(tmp_path: Path) -> None:
    exif_image = Image.new("RGB", (8, 4), RED)
    exif = exif_image.getexif()
    exif[0x0112] = 6
    paths = [
        _save(tmp_path, "rot.jpg", exif_image, exif=exif),
        _save(tmp_path, "rgba.png", Image.new("RGBA", (4, 4), (1, 2, 3, 4))),
        _save(tmp_path, "deep.png", Image.fromarray(np.full((3, 3), 1000, np.uint16))),
        _truncated(tmp_path, "cut.png"),
    ]
    before = {}
    for path in paths:
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
        before[path] = (path.read_bytes(), path.stat().st_mtime_ns)
    for path in paths:
        try:
            load_image(path, channels=1)
        except ImageDecodeError:
            pass
    for path in paths:
        assert (path.read_bytes(), path.stat().st_mtime_ns) == before[path], path


def test_scan_images_splits_good_and_bad_in_order(tmp_path: Path) -> None:
    good_1 = _save(tmp_path, "a.png", Image.new("RGB", (3, 3)))
    bad_1 = _truncated(tmp_path, "b.jpg")
    good_2 = _save(tmp_path, "c.png", Image.new("L", (3, 3)))
    bad_2 = tmp_path / "d.png"
    bad_2.write_text("text")
    good_3 = _save(tmp_path, "e.png", Image.new("LA", (3, 3)))
    good, bad = scan_images([good_1, bad_1, good_2, bad_2, good_3], channels=3, workers=2)
    assert good == [good_1, good_2, good_3]
    assert [path for path, _ in bad] == [bad_1, bad_2]
    assert all(isinstance(reason, str) and reason for _, reason in bad)


def test_scan_images_validates_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers"):
        scan_images([], channels=3, workers=0)
    with pytest.raises(ValueError, match="got 2"):
        scan_images([], channels=2)


def test_image_extensions_are_lower_case_with_dot() -> None:
    assert {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"} <= IMAGE_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)
