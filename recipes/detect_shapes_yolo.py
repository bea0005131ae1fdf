"""Modern YOLO-style detection (PAN neck, anchor-free decoupled head, task-aligned assignment, CIoU) on shapes.

2,000 rendered 64x64 images with 1-4 circles, squares and triangles (10-32 px); seeded split 1,400 / 300 / 300.
The default backbone, timm's ResNet-10-T trained from scratch, is small enough for a CPU; the head is ``nano``
(``model.head.size=small`` etc. for wider/deeper necks). Target: ``map50`` >= 0.90 on the held-out test split
within 15 minutes on a 2-core CPU: these 12 epochs reach 0.97 in about 6 minutes (docs/detection.md).

    zoo train recipes/detect_shapes_yolo.py
    zoo train recipes/detect_shapes_yolo.py model.backbone.name=mobilenetv3_small_100 model.head.size=small
"""

import albumentations as A

from heads import Yolo, YoloLoss
from zoo.data.detection import ShapesDetectionData
from zoo.recipe import Augment, BackboneSpec, Optim, Recipe, Schedule, Trainer

recipe = Recipe(
    name="detect_shapes_yolo",
    data=ShapesDetectionData(batch_size=32, num_workers=2),
    model=BackboneSpec(name="resnet10t") | Yolo(size="nano"),
    loss=YoloLoss(box_loss="ciou"),
    aug=Augment(train=(A.HorizontalFlip(p=0.5), A.ColorJitter(0.2, 0.2, 0.2, 0.02, p=0.5))),
    optim=Optim(name="adamw", lr=2e-3, weight_decay=0.05),
    sched=Schedule(name="cosine", warmup_epochs=1),
    trainer=Trainer(max_epochs=12),
)
