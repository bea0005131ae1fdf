"""Any images + masks folder: a U-Net decoder on a ResNet-18, cross-entropy + Dice.

    zoo train recipes/segment_folder.py data.root=PATH data.classes="('background', 'road', 'car')"

``data.root`` holds ``images/`` and ``masks/`` (a mask is ``<image stem>.png`` holding one class index per pixel;
``data.ignore_index``, default 255, marks pixels that count nowhere), split by ``data.val_fraction`` /
``data.test_fraction``, or ``train/ val/ test/`` folders each holding both. Without ``data.classes`` the classes
are numbered from the masks' largest value. Letterboxing keeps the aspect ratio; its padding (and the border an
affine transform brings in) is background in the mask (``docs/segmentation.md``). Start from pretrained weights
where you have them: ``model.backbone.pretrained=True``.
"""

import albumentations as A

from heads import SegmentationLoss, UNet
from zoo.data import MaskFolderData
from zoo.recipe import Augment, BackboneSpec, Optim, Recipe, Schedule, Trainer

recipe = Recipe(
    name="segment_folder",
    data=MaskFolderData(root=None, image_size=256, batch_size=8),
    model=BackboneSpec(name="resnet18", pretrained=False) | UNet(width=32),
    loss=SegmentationLoss(name="ce+dice"),
    aug=Augment(resize="letterbox", train=(
        A.HorizontalFlip(p=0.5),
        A.Affine(translate_percent=(-0.1, 0.1), scale=(0.8, 1.2), rotate=(-10, 10), p=0.7),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
    )),
    optim=Optim(name="adamw", lr=1e-3, weight_decay=1e-4),
    sched=Schedule(name="cosine", warmup_epochs=1),
    trainer=Trainer(max_epochs=40, early_stopping_patience=10),
)
