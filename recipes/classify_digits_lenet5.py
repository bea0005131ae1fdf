"""LeNet-5 on scikit-learn's bundled handwritten digits: the demo's default recipe.

8x8 digits are upsampled to LeNet's 32x32 input; small shifts, rotations and scalings augment them.
Split (seeded, stratified): 1,257 train / 180 val / 360 test images.

    zoo train recipes/classify_digits_lenet5.py
"""

import albumentations as A

from heads import Classifier, CrossEntropy
from zoo.data import DigitsData
from zoo.recipe import Augment, BackboneSpec, Optim, Recipe, Schedule, Trainer

recipe = Recipe(
    name="digits_lenet5",
    data=DigitsData(batch_size=32),
    # F6 (84 units) and the output layer of the paper form the head.
    model=BackboneSpec(name="lenet5", in_chans=1) | Classifier(hidden=(84,)),
    loss=CrossEntropy(label_smoothing=0.05),
    aug=Augment(train=(A.Affine(translate_percent=(-0.08, 0.08), rotate=(-10, 10), scale=(0.9, 1.1), p=0.8),)),
    optim=Optim(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4),
    sched=Schedule(name="cosine", warmup_epochs=1),
    trainer=Trainer(max_epochs=30),
)
