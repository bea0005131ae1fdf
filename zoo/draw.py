"""Small picture helpers the tasks share: text under an image, upscaling tiny images so text fits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["as_rgb", "upscale", "text_below", "GREEN", "RED", "BLACK"]

GREEN, RED, BLACK = (0, 140, 0), (200, 0, 0), (0, 0, 0)
_LINE_HEIGHT = 12


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
               width_chars: int | None = None) -> np.ndarray:
    """``image`` (RGB) on a white strip with ``lines`` of text beneath it, each wrapped to the picture's width."""
    image = as_rgb(image)
    font = ImageFont.load_default()
    per_line = width_chars or max(8, image.shape[1] // 6)
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
    canvas = Image.new("RGB", (image.shape[1], image.shape[0] + _LINE_HEIGHT * len(wrapped) + 4), "white")
    canvas.paste(Image.fromarray(image), (0, 0))
    pen = ImageDraw.Draw(canvas)
    for i, (text, color) in enumerate(wrapped):
        pen.text((2, image.shape[0] + 2 + i * _LINE_HEIGHT), text, fill=color, font=font)
    return np.asarray(canvas)
