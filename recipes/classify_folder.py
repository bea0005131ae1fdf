"""Any image-folder dataset (one subfolder per class), fine-tuning a pretrained backbone.

    zoo train recipes/classify_folder.py data.root=PATH model.backbone.name=resnet18 \
        model.backbone.pretrained=True

``data.root`` holds ``<class>/`` folders (split by fractions) or ``train/ val/ test/`` folders of them.
``pretrained=True`` takes the library's default weights from the local cache (nothing is downloaded);
a file path works too. Don't be a hero: start from pretrained weights, then tune ``optim.lr``.
"""

import albumentations as A

from heads import Classifier, CrossEntropy
from zoo.data import ImageFolderData
from zoo.recipe import Augment, BackboneSpec, Optim, Recipe, Schedule, Trainer

recipe = Recipe(
    name="folder",
    data=ImageFolderData(root=None, image_size=224, batch_size=32),
    model=BackboneSpec(name="resnet18", pretrained=False) | Classifier(dropout=0.2),
    loss=CrossEntropy(label_smoothing=0.1),
    aug=Augment(train=(
        A.HorizontalFlip(p=0.5),
        A.Affine(translate_percent=(-0.1, 0.1), scale=(0.85, 1.15), rotate=(-15, 15), p=0.7),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
    )),
    optim=Optim(name="adamw", lr=3e-4, weight_decay=0.05),
    sched=Schedule(name="cosine", warmup_epochs=1),
    trainer=Trainer(max_epochs=20, early_stopping_patience=5),
)
