"""Small picture helpers the tasks share: text under an image, upscaling tiny images so text fits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["as_rgb", "upscale", "text_below", "palette", "overlay_mask", "draw_boxes", "font_size", "GREEN", "RED",
           "BLACK"]

GREEN, RED, BLACK = (0, 140, 0), (200, 0, 0), (0, 0, 0)
_MIN_FONT = 10  # pixels: Pillow's bitmap default, readable on the enlarged small images
_FONT_PER_SIDE = 1 / 28  # text height per pixel of the image's shorter side, so labels on a photo are not specks


def font_size(image: np.ndarray) -> int:
    """Text height in pixels for labels drawn on ``image``: grows with its shorter side (18 px on a 512 px photo)."""
    return max(_MIN_FONT, round(min(image.shape[:2]) * _FONT_PER_SIDE))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size) if size > _MIN_FONT else ImageFont.load_default()


def as_rgb(image: np.ndarray) -> np.ndarray:
    """``uint8 [H, W]``, ``[H, W, 1]`` or ``[H, W, 3]`` → ``uint8 [H, W, 3]``."""
    if image.ndim == 2:
        image = image[..., None]
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def upscale(image: np.ndarray, min_side: int = 96) -> tuple[np.ndarray, int]:
    """Nearest-neighbour enlargement by an integer factor until the short side is ``min_side``; returns the factor."""
    factor = max(1, -(-min_side // min(image.shape[:2])))
    if factor == 1:
        return image, 1
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1), factor


def text_below(image: np.ndarray, lines: Sequence[str], colors: Sequence[tuple[int, int, int]] | None = None, *,
               width_chars: int | None = None, size: int | None = None) -> np.ndarray:
    """``image`` (RGB) on a white strip with ``lines`` of text beneath it, each wrapped to the picture's width;
    ``size``: the text height in pixels (default: :func:`font_size` of the image)."""
    image = as_rgb(image)
    size = size or font_size(image)
    font, line_height = _font(size), size + 2
    per_line = width_chars or max(8, image.shape[1] // round(size * 0.6))
    wrapped: list[tuple[str, tuple[int, int, int]]] = []
    for i, line in enumerate(lines):
        color = colors[i] if colors else BLACK
        words, current = line.split(" "), ""
        for word in words:
            if current and len(current) + 1 + len(word) > per_line:
                wrapped.append((current, color))
                current = word
            else:
                current = f"{current} {word}".strip()
        wrapped.append((current, color))
    canvas = Image.new("RGB", (image.shape[1], image.shape[0] + line_height * len(wrapped) + 4), "white")
    canvas.paste(Image.fromarray(image), (0, 0))
    pen = ImageDraw.Draw(canvas)
    for i, (text, color) in enumerate(wrapped):
        pen.text((2, image.shape[0] + 2 + i * line_height), text, fill=color, font=font)
    return np.asarray(canvas)


def palette(n: int) -> np.ndarray:
    """``uint8 [n, 3]`` distinct colours for class indices; index 0 (background) is black.

    The first colours are hand-picked for contrast; the rest come from the PASCAL VOC bit-interleaving scheme.
    """
    fixed = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48),
             (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128)]
    colours = fixed[:n]
    for i in range(len(colours), n):
        c, r, g, b = i, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colours.append((r, g, b))
    return np.array(colours, np.uint8).reshape(n, 3)


def overlay_mask(image: np.ndarray, mask: np.ndarray, colours: np.ndarray, *, alpha: float = 0.55,
                 skip: Sequence[int] = (0,), ignore_colour: tuple[int, int, int] = (255, 255, 255),
                 ignore_index: int | None = None) -> np.ndarray:
    """``image`` (uint8, any channels) in grey with each pixel of ``mask`` (class indices ``[H, W]``) tinted by its
    colour (grey first, so the tint is not confused with the image's own colours).

    Classes in ``skip`` (background) are left untinted; ``ignore_index`` pixels are tinted ``ignore_colour``.
    """
    picture = as_rgb(image).astype(np.float32).mean(axis=2, keepdims=True).repeat(3, axis=2)
    mask = np.asarray(mask)
    tint = np.zeros_like(picture)
    strength = np.zeros(mask.shape, np.float32)
    valid = mask < len(colours)
    tint[valid] = colours[mask[valid]]
    strength[valid] = alpha
    strength[np.isin(mask, list(skip))] = 0.0
    if ignore_index is not None:
        tint[mask == ignore_index] = ignore_colour
        strength[mask == ignore_index] = alpha
    picture = picture * (1 - strength[..., None]) + tint * strength[..., None]
    return picture.round().clip(0, 255).astype(np.uint8)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, labels: Sequence[str],
               colors: tuple[int, int, int] | Sequence[int | tuple[int, int, int]], *, width: int = 2) -> np.ndarray:
    """``image`` (RGB uint8) with xyxy pixel ``boxes [M, 4]`` outlined and each labelled above its top-left corner.

    ``colors`` is one RGB colour for all boxes, or one per box (an RGB tuple, or a class index: the
    colour :func:`palette` gives class ``index + 1``).
    """
    canvas = Image.fromarray(as_rgb(image))
    pen = ImageDraw.Draw(canvas)
    font = _font(font_size(np.asarray(image)))
    single = isinstance(colors, tuple) and len(colors) == 3 and all(isinstance(c, int) for c in colors)
    for i, (box, text) in enumerate(zip(np.asarray(boxes, np.float32).reshape(-1, 4), labels)):
        color = colors if single else colors[i]
        color = tuple(int(v) for v in (palette(color + 2)[color + 1] if isinstance(color, int) else color))
        x1, y1, x2, y2 = (float(v) for v in box)
        pen.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=color, width=width)
        if text:
            left, top, right, bottom = pen.textbbox((x1, y1), text, font=font)
            y = y1 - (bottom - top) - 2 if y1 >= bottom - top + 2 else y1
            pen.rectangle([x1, y, x1 + right - left + 2, y + bottom - top + 2], fill=color)
            pen.text((x1 + 1, y), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)
