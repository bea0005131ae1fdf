"""Single-object localization on shapes: one class and one box per image, from the pooled deepest feature.

2,000 rendered 64x64 images, each with one circle, square or triangle of 10-32 px; seeded split 1,400 / 300 / 300.
timm's ResNet-10-T from scratch; the box loss is GIoU (``loss.box_loss=l2`` or ``huber`` for the others).
Target: ``mean_iou`` >= 0.80 on the held-out test split.

    zoo train recipes/localize_shapes.py
    zoo train recipes/localize_shapes.py loss.box_loss=huber
"""

import albumentations as A

from heads import LocalizationLoss, Localizer
from zoo.data.detection import ShapesDetectionData
from zoo.recipe import Augment, BackboneSpec, Optim, Recipe, Schedule, Trainer

recipe = Recipe(
    name="localize_shapes",
    data=ShapesDetectionData(max_objects=1, batch_size=32, num_workers=2),
    model=BackboneSpec(name="resnet10t") | Localizer(hidden=256),
    loss=LocalizationLoss(box_loss="giou", box_weight=5.0),
    aug=Augment(train=(A.HorizontalFlip(p=0.5), A.ColorJitter(0.2, 0.2, 0.2, 0.02, p=0.5))),
    optim=Optim(name="adamw", lr=2e-3, weight_decay=0.05),
    sched=Schedule(name="cosine", warmup_epochs=1),
    trainer=Trainer(max_epochs=8),
)
