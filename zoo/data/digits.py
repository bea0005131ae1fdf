"""scikit-learn's bundled handwritten digits (1,797 8x8 grey images, 10 classes) as an embedded dataset.

The data ships inside scikit-learn, so nothing is downloaded. Pixel values 0..16 are scaled to 0..255;
the pipeline then resizes them to ``image_size`` (32 for LeNet-5).

Split: seeded (``split_seed``) and stratified by class — 20 % test (360 images), 10 % of the whole val (180), the rest
train (1,257) at the default fractions and ``split_seed=0``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np

from zoo.data.base import ArraySource, DataSplits, ImageData, stratified_split
from zoo.recipe.spec import Range, spec

__all__ = ["DigitsData"]


@spec
class DigitsData(ImageData):
    image_size: Annotated[int, Range(ge=8, le=8192)] = 32  # 8x8 digits are resized to this
    channels: Literal[1, 3] = 1  # grey; 3 replicates the grey channel
    mean: tuple[float, ...] = (0.5,)  # normalisation mean (0..1 scale)
    std: tuple[float, ...] = (0.5,)  # normalisation std
    num_workers: Annotated[int, Range(ge=0)] = 0  # in memory: workers only add start-up cost
    val_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1  # share of all images held out for validation
    test_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.2  # share of all images held out for testing
    split_seed: int = 0  # seeds the split, kept apart from the training seed so the test set stays fixed

    def static_classes(self) -> tuple[str, ...]:
        return tuple(str(d) for d in range(10))

    def setup(self) -> DataSplits:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]  # [N, 8, 8, 1]
        if self.channels == 3:
            images = np.repeat(images, 3, axis=-1)
        labels = digits.target.astype(np.int64)
        train, val, test = stratified_split(labels, val_fraction=self.val_fraction,
                                            test_fraction=self.test_fraction, seed=self.split_seed)
        return DataSplits.single("label", classes=self.static_classes(),
                          **{name: ArraySource(images[idx], labels[idx].tolist())
                             for name, idx in (("train", train), ("val", val), ("test", test))})
