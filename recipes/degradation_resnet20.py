"""The degradation experiment (He et al., 2016, Fig. 1 and 6): plain nets and ResNets of 20 and 56 layers.

This file holds the budget all four runs share; ``degradation_plain20``, ``degradation_plain56`` and
``degradation_resnet56`` take it and change only the backbone and the run name. The data is scikit-learn's
bundled digits, 8x8 grey images resized to the CIFAR nets' 32x32 input (1,257 train / 180 val / 360 test); the
optimizer is the paper's (SGD, momentum 0.9, weight decay 1e-4, lr 0.1) with a cosine schedule; no
augmentation, so that the training loss measures how well each net fits the same images. Results and the
commands: docs/degradation.md.

    zoo train recipes/degradation_resnet20.py --out runs/degradation/resnet20
"""

from heads import Classifier, CrossEntropy
from zoo.data import DigitsData
from zoo.recipe import BackboneSpec, Optim, Recipe, Schedule, Trainer

recipe = Recipe(
    name="degradation_resnet20",
    data=DigitsData(batch_size=64, image_size=32),
    # The paper's CIFAR classifier: global average pooling, then one FC layer.
    model=BackboneSpec(name="resnet20", in_chans=1) | Classifier(),
    loss=CrossEntropy(),
    optim=Optim(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4),
    sched=Schedule(name="cosine"),
    # 19 steps an epoch (1,257 images, the last partial batch dropped): a loss point every 5 steps.
    trainer=Trainer(max_epochs=20, log_every_n_steps=5),
    seed=0,
)
