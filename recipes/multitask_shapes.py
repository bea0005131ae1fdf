"""One backbone, three heads trained jointly on shapes: detection (modern YOLO head), segmentation (U-Net) and
captioning (transformer decoder), every image labelled for all three (``ShapesMultiTaskData``).

2,000 rendered 64x64 images with 1-3 objects; seeded split 1,400 / 300 / 300 (training holds each image twice, once
per caption). ResNet-10-T from scratch feeds all three heads; the losses are summed with fixed weights
(``loss.weighting="uncertainty"`` learns them instead, Kendall et al. 2018). Metrics are prefixed by head name
(``val/det/map50``, ``val/seg/miou``, ``val/cap/cider``); ``best.ckpt`` is picked by ``trainer.monitor``.
No flips or colour jitter: the captions name positions and colours. The benchmark against the three single-task
models is in docs/benchmarks.md (``python tools/bench_multitask.py``).

    zoo train recipes/multitask_shapes.py
    zoo train recipes/multitask_shapes.py trainer.monitor=seg/miou loss.weights="{'det': 1.0, 'seg': 0.5, 'cap': 1.0}"
    zoo predict runs/multitask_shapes/best.ckpt photo.png --out preds/ model.heads.det.score_threshold=0.4
"""

import albumentations as A

from heads import CaptionCrossEntropy, SegmentationLoss, TransformerCaptioner, UNet, Yolo, YoloLoss
from zoo.data.multi import ShapesMultiTaskData
from zoo.recipe import Augment, BackboneSpec, Losses, Optim, Recipe, Schedule, Trainer

recipe = Recipe(
    name="multitask_shapes",
    data=ShapesMultiTaskData(num_images=2000, batch_size=32, num_workers=2),
    model=BackboneSpec(name="resnet10t") | {
        "det": Yolo(size="nano"),
        "seg": UNet(width=16),
        "cap": TransformerCaptioner(level=-2, dim=128, heads=4, layers=2, ffn=256, beam_size=3, length_penalty=0.5),
    },
    loss=Losses(heads={"det": YoloLoss(box_loss="ciou"), "seg": SegmentationLoss(name="ce+dice"),
                       "cap": CaptionCrossEntropy(label_smoothing=0.05)},
                weights={"det": 1.0, "seg": 1.0, "cap": 1.0}),
    aug=Augment(train=(A.Affine(translate_percent=(-0.04, 0.04), scale=(0.95, 1.05), p=0.5),)),
    optim=Optim(name="adamw", lr=2e-3, weight_decay=0.01),
    sched=Schedule(name="cosine", warmup_epochs=1),
    trainer=Trainer(max_epochs=8, gradient_clip_val=1.0, monitor="det/map"),
)
