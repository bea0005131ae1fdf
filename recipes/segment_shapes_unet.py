"""U-Net decoder on a ResNet-10-T backbone, from scratch, segmenting the embedded shapes set (background + 3 shapes).

64x64 renders with up to three objects each; seeded split 1,400 train / 300 val / 300 test images.
Flips and small affine jitter move image and mask together (``docs/segmentation.md``). Sized for the issue's
budget: 5 epochs of batches of 16 train in under 10 minutes on a 2-core CPU (``docs/segmentation.md``, Benchmarks).

    zoo train recipes/segment_shapes_unet.py
"""

import albumentations as A

from heads import SegmentationLoss, UNet
from zoo.data import ShapesSegmentationData
from zoo.recipe import Augment, BackboneSpec, Optim, Recipe, Schedule, Trainer

recipe = Recipe(
    name="segment_shapes_unet",
    data=ShapesSegmentationData(num_images=2000, image_size=64, batch_size=16),
    model=BackboneSpec(name="resnet10t") | UNet(width=32),
    loss=SegmentationLoss(name="ce+dice"),
    aug=Augment(train=(
        A.HorizontalFlip(p=0.5),
        A.Affine(translate_percent=(-0.05, 0.05), scale=(0.9, 1.1), p=0.5),
    )),
    optim=Optim(name="adamw", lr=2e-3, weight_decay=1e-4),
    sched=Schedule(name="cosine", warmup_epochs=1),
    trainer=Trainer(max_epochs=5),
)
