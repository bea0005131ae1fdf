"""YOLO v1 on shapes: an S×S grid, B boxes and C class probabilities per cell, the paper's sum-squared loss.

2,000 rendered 64x64 images with 1-4 circles, squares and triangles (10-32 px); seeded split 1,400 / 300 / 300.
The backbone is timm's ResNet-10-T from scratch; the grid reads its stride-8 map (``level=-3``: 8x8 at
64 px, so the grid is the map itself, cells of 8 px and two object centres rarely share one) rather than the 2x2
deepest map. Loss weights are the paper's (λcoord 5, λnoobj 0.5). Target: ``map50`` >= 0.60 on the held-out test
split.

    zoo train recipes/detect_shapes_yolov1.py
    zoo train recipes/detect_shapes_yolov1.py model.head.grid=7 model.head.boxes_per_cell=3
"""

import albumentations as A

from heads import YoloV1, YoloV1Loss
from zoo.data.detection import ShapesDetectionData
from zoo.recipe import Augment, BackboneSpec, Optim, Recipe, Schedule, Trainer

recipe = Recipe(
    name="detect_shapes_yolov1",
    data=ShapesDetectionData(batch_size=32, num_workers=2),
    model=BackboneSpec(name="resnet10t") | YoloV1(grid=8, boxes_per_cell=2, hidden=256, level=-3),
    loss=YoloV1Loss(coord=5.0, noobj=0.5),
    aug=Augment(train=(A.HorizontalFlip(p=0.5), A.ColorJitter(0.2, 0.2, 0.2, 0.02, p=0.5))),
    optim=Optim(name="adamw", lr=2e-3, weight_decay=0.05),
    sched=Schedule(name="cosine", warmup_epochs=1),
    trainer=Trainer(max_epochs=8),
)
