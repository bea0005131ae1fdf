"""The one place images are decoded: every Pillow mode in, a uint8 ``HxWxC`` array out.

Everything that reads pixels from disk (dataset adapters, tools, tests) goes through :func:`load_image`, so mode
handling, EXIF orientation and error messages are the same everywhere.

Mode normalisation (before the conversion to the requested number of channels):

* ``1``, ``L``: grey; ``1`` becomes 0/255.
* ``P``, ``PA``, ``RGBA``, ``LA`` and ``L``/``RGB`` with a ``transparency`` key: alpha-composited onto a **black**
  background (colour * alpha / 255), so transparent pixels become 0 — the same value as zero padding.
  ``La``/``RGBa`` (premultiplied alpha) are already composited onto black; their alpha is dropped.
* ``I;16``, ``I;16B``, ``I;16L``, ``I;16N``: 0..65535 mapped to 0..255 (divide by 257, round).
* ``I`` (32-bit signed): negatives clipped to 0; if the maximum is <= 65535 the data is taken to be 16-bit and
  divided by 257, otherwise 0..2**31-1 is mapped to 0..255.
* ``F``: NaN -> 0; if the maximum is <= 1 the data is taken to be 0..1 and scaled by 255, otherwise clipped to 0..255.
* anything else (``CMYK``, ``YCbCr``, ``HSV``, ...): ``convert("RGB")``.

Then ``channels=1`` uses Pillow's luminance (``convert("L")``, ITU-R 601-2) on colour data, and ``channels=3``
replicates grey data into three channels.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from zoo.errors import ZooError

# Deliberately no ``ImageFile.LOAD_TRUNCATED_IMAGES = True`` anywhere: a truncated file must fail loudly here rather
# than train on a half-grey image.

__all__ = ["IMAGE_EXTENSIONS", "ImageDecodeError", "load_image", "image_to_array", "scan_images", "image_size"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)

_SUPPORTED_CHANNELS = (1, 3)
# Exceptions Pillow's plugins raise on corrupt or truncated data (besides OSError, which covers
# UnidentifiedImageError and "image file is truncated"). DecompressionBombError is raised for absurd pixel counts.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)


class ImageDecodeError(ZooError, ValueError):
    """An image file could not be decoded.

    Attributes:
        path: the file that failed.
        reason: why, in a few words (usually Pillow's message).
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot decode image {str(self.path)!r}: {reason}")


def load_image(path: str | os.PathLike, *, channels: int = 3) -> np.ndarray:
    """Decode one image file, applying its EXIF orientation and normalising its mode.

    The file is opened read-only and fully decoded (a truncated file fails here, not later). See the module
    docstring for how each Pillow mode is mapped to 8 bits; transparency is composited onto black.

    Args:
        path: image file to read.
        channels: 1 (grey, Pillow luminance) or 3 (RGB; grey data is replicated).

    Returns:
        ``uint8`` array of shape ``[H, W, channels]`` (always 3-D), values 0..255, C-contiguous and writable.
        ``H, W`` are after EXIF orientation, i.e. as a viewer displays the image.

    Raises:
        ValueError: ``channels`` is not 1 or 3.
        ImageDecodeError: the file is missing, not an image, truncated or corrupt; the message names the file.
    """
    if channels not in _SUPPORTED_CHANNELS:
        raise ValueError(f"load_image: channels must be one of {_SUPPORTED_CHANNELS}, got {channels!r} (file {path!r})")
    try:
        with open(path, "rb") as file, Image.open(file) as image:
            image.load()  # force the full decode inside the try: Image.open only reads the header
            return image_to_array(image, channels=channels)
    except UnidentifiedImageError as error:
        raise ImageDecodeError(path, "not an image file in any format Pillow recognises") from error
    except _DECODE_ERRORS as error:
        raise ImageDecodeError(path, f"{type(error).__name__}: {error}") from error


def image_to_array(image: Image.Image, *, channels: int = 3) -> np.ndarray:
    """A decoded Pillow image (any mode) → ``uint8 [H, W, channels]``, exactly as :func:`load_image` maps a file:
    EXIF orientation applied, the mode normalised (module docstring), then converted to ``channels`` (1 or 3)."""
    if channels not in _SUPPORTED_CHANNELS:
        raise ValueError(f"image_to_array: channels must be one of {_SUPPORTED_CHANNELS}, got {channels!r}")
    pixels = _to_uint8(ImageOps.exif_transpose(image))
    if pixels.ndim == 2:  # grey [H, W]
        out = pixels[:, :, None] if channels == 1 else np.repeat(pixels[:, :, None], 3, axis=2)
    elif channels == 1:
        out = np.asarray(Image.fromarray(pixels).convert("L"))[:, :, None]
    else:
        out = pixels
    return np.array(out, dtype=np.uint8, order="C", copy=True)


def image_size(path: str | os.PathLike, *, verify: bool = False) -> tuple[int, int]:
    """``(width, height)`` of an image as :func:`load_image` returns it (EXIF orientation applied), from its header
    only: no pixels are decoded. ``verify`` also runs Pillow's ``verify`` (chunk checksums of a PNG, for instance),
    which finds many truncated or corrupt files without decoding them.

    Raises:
        ImageDecodeError: the file is missing or its header is not an image's.
    """
    try:
        with open(path, "rb") as file, Image.open(file) as image:
            width, height = image.size
            rotated = image.getexif().get(0x0112) in (5, 6, 7, 8)  # orientations that rotate by 90 degrees
        if verify:  # Pillow's verify must come straight after open, and leaves the image unusable
            with open(path, "rb") as file, Image.open(file) as image:
                image.verify()
    except UnidentifiedImageError as error:
        raise ImageDecodeError(path, "not an image file in any format Pillow recognises") from error
    except _DECODE_ERRORS as error:
        raise ImageDecodeError(path, f"{type(error).__name__}: {error}") from error
    return (height, width) if rotated else (width, height)


def scan_images(
    paths: Sequence[Path], *, channels: int, workers: int = 4
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Fully decode every file (in threads) to find the ones that cannot be loaded.

    Does not warn; the caller decides how to report the bad files.

    Args:
        paths: files to check.
        channels: as for :func:`load_image`.
        workers: number of decoding threads (>= 1); Pillow releases the GIL while decoding.

    Returns:
        ``(good, bad)``: the decodable paths in their original order, and ``(path, reason)`` for each failure, also
        in the original order.

    Raises:
        ValueError: ``channels`` is not 1 or 3, or ``workers`` < 1.
    """
    if channels not in _SUPPORTED_CHANNELS:
        raise ValueError(f"scan_images: channels must be one of {_SUPPORTED_CHANNELS}, got {channels!r}")
    if workers < 1:
        raise ValueError(f"scan_images: workers must be >= 1, got {workers!r}")

    def failure(path: Path) -> str | None:
        try:
            load_image(path, channels=channels)
        except ImageDecodeError as error:
            return error.reason
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = list(pool.map(failure, paths))
    good = [Path(p) for p, reason in zip(paths, reasons) if reason is None]
    bad = [(Path(p), reason) for p, reason in zip(paths, reasons) if reason is not None]
    return good, bad


def _to_uint8(image: Image.Image) -> np.ndarray:
    """Map any Pillow mode to ``uint8`` grey ``[H, W]`` or RGB ``[H, W, 3]`` (see the module docstring)."""
    mode = image.mode
    has_key_transparency = "transparency" in image.info
    if mode in ("L", "RGB") and not has_key_transparency:
        return np.asarray(image)
    if mode == "1":
        return np.asarray(image.convert("L"))
    if mode == "LA" or (mode == "L" and has_key_transparency):
        return _composite_on_black(np.asarray(image.convert("LA")))
    if mode in ("P", "PA", "RGBA") or (mode == "RGB" and has_key_transparency):
        return _composite_on_black(np.asarray(image.convert("RGBA")))
    if mode in ("La", "RGBa"):
        return np.asarray(image)[:, :, :-1]
    if mode.startswith("I;16"):
        return _scale_to_uint8(np.asarray(image).astype(np.float64), 65535.0)
    if mode == "I":
        values = np.clip(np.asarray(image).astype(np.float64), 0.0, None)
        full_scale = 65535.0 if values.size == 0 or values.max() <= 65535 else float(2**31 - 1)
        return _scale_to_uint8(values, full_scale)
    if mode == "F":
        values = np.nan_to_num(np.asarray(image).astype(np.float64), nan=0.0)
        full_scale = 1.0 if values.size == 0 or values.max() <= 1.0 else 255.0
        return _scale_to_uint8(values, full_scale)
    # CMYK, YCbCr, HSV, LAB, ...; a mode Pillow cannot convert raises ValueError, which load_image reports as an
    # ImageDecodeError naming the file.
    return np.asarray(image.convert("RGB"))


def _composite_on_black(with_alpha: np.ndarray) -> np.ndarray:
    """``[H, W, C+1]`` uint8 with alpha last -> ``[H, W, C]`` uint8 composited onto black (grey if C == 1)."""
    colour = with_alpha[:, :, :-1].astype(np.uint16)
    alpha = with_alpha[:, :, -1:].astype(np.uint16)
    out = ((colour * alpha + 127) // 255).astype(np.uint8)
    return out[:, :, 0] if out.shape[2] == 1 else out


def _scale_to_uint8(values: np.ndarray, full_scale: float) -> np.ndarray:
    """Map ``0..full_scale`` linearly to ``0..255`` (clipping outside values), rounding to nearest."""
    return np.rint(np.clip(values * (255.0 / full_scale), 0.0, 255.0)).astype(np.uint8)
