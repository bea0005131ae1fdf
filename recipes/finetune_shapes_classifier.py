"""Fine-tune a detector's backbone into a shape classifier with few labels: freeze, then unfreeze, with EMA and mixup.

The source: the ResNet-10-T of a shapes detector (``recipes/detect_shapes_yolo.py``), trained first:

    zoo train recipes/detect_shapes_yolo.py --out runs/detect_shapes_yolo
    zoo train recipes/finetune_shapes_classifier.py

The target: 150 shapes images rendered from another seed with one object each (the image-folder view: circle,
square, triangle), split 105 / 22 / 23. ``model.weights`` loads the detector's backbone (its detection head is left
out and reported, the classifier is new); the backbone is frozen for the first 3 epochs (a linear probe; its
BatchNorm statistics kept), then trained at a tenth of the learning rate with layer-wise decay (each of timm's
layers of the backbone at 0.7x the rate of the one above it, the stem slowest); an EMA of the weights is what
validation, ``best.ckpt`` and ``zoo eval`` use; mixup softens the few labels.
``model.weights=None model.backbone.freeze=False model.backbone.unfreeze_at_epoch=None`` is the from-scratch
baseline; ``tools/bench_finetune.py`` runs every strategy (docs/benchmarks.md, Fine-tuning).
"""

import albumentations as A

from heads import Classifier, CrossEntropy
from zoo.data import ShapesData
from zoo.recipe import Augment, BackboneSpec, ModelSpec, Optim, Recipe, Schedule, Trainer

recipe = Recipe(
    name="finetune_shapes_classifier",
    data=ShapesData(num_images=150, shapes_seed=7, batch_size=16, num_workers=0),
    model=ModelSpec(
        backbone=BackboneSpec(name="resnet10t", freeze=True, freeze_bn=True, unfreeze_at_epoch=3,
                              unfreeze_lr_mult=0.1),
        head=Classifier(dropout=0.1),
        weights="runs/detect_shapes_yolo/best.ckpt",  # a local zoo checkpoint: its backbone is what transfers
    ),
    loss=CrossEntropy(label_smoothing=0.1, mixup_alpha=0.2),
    aug=Augment(train=(A.HorizontalFlip(p=0.5),)),
    optim=Optim(name="adamw", lr=3e-3, weight_decay=0.01, backbone_lr_mult=1.0, layer_decay=0.7),
    sched=Schedule(name="cosine", warmup_epochs=0),
    trainer=Trainer(max_epochs=10, ema_decay=0.9, monitor="top1"),
)
