"""The synthetic shapes set (``zoo.data.shapes``) as a dataset adapter.

It is rendered once into the cache (``$ZOO_CACHE``, default ``~/.cache/zoo``) and read through its
image-folder view, one subfolder per class of the largest object in each image.
"""

from __future__ import annotations

from typing import Annotated

from zoo.data.base import DataSplits, ImageData
from zoo.data.folder import ImageFolderData
from zoo.data.shapes import SHAPE_CLASSES, ShapesConfig, shapes_root
from zoo.recipe.spec import Range, spec

__all__ = ["ShapesData"]


@spec
class ShapesData(ImageData):
    num_images: Annotated[int, Range(ge=10)] = 600  # images rendered
    render_size: Annotated[int, Range(ge=32)] = 64  # side of the rendered images in pixels
    max_objects: Annotated[int, Range(ge=1)] = 1  # objects per image (1..max_objects)
    shapes_seed: int = 0  # seeds the renderer: the same settings give the same files
    image_size: Annotated[int, Range(ge=8, le=8192)] = 64  # model input side (images are resized to it)
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.25, 0.25, 0.25)
    val_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.15  # share of images for validation
    test_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.15  # share of images for testing
    split_seed: int = 0  # seeds the split
    cache_dir: str | None = None  # where the rendered set lives (default $ZOO_CACHE or ~/.cache/zoo)

    def config(self) -> ShapesConfig:
        return ShapesConfig(num_images=self.num_images, image_size=self.render_size,
                            max_objects=self.max_objects, seed=self.shapes_seed)

    def static_classes(self) -> tuple[str, ...]:
        return SHAPE_CLASSES

    def setup(self) -> DataSplits:
        root = shapes_root(self.config(), self.cache_dir)
        folder = ImageFolderData(root=str(root / "classes"), channels=self.channels, image_size=self.image_size,
                                 mean=self.mean, std=self.std, val_fraction=self.val_fraction,
                                 test_fraction=self.test_fraction, split_seed=self.split_seed, verify_images=False)
        splits = folder.setup()
        if splits.classes["label"] != SHAPE_CLASSES:  # a class that never came out largest leaves no folder
            raise ValueError(f"{root}: rendered classes {splits.classes['label']} differ from {SHAPE_CLASSES}; render more images")
        return splits
