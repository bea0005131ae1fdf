"""A convolutional autoencoder on scikit-learn's digits: ResNet-20 encoder, 32-d code, transposed-conv decoder.

8x8 digits are upsampled to 32x32; the reconstruction (sigmoid, [0, 1] pixels) is trained with L2 against the
clean image and monitored by PSNR. Split (seeded, stratified): 1,257 train / 180 val / 360 test images.

    zoo train recipes/autoencode_digits.py
"""

from heads import Autoencoder, ReconstructionLoss
from zoo.data import DigitsData
from zoo.recipe import BackboneSpec, Optim, Recipe, Schedule, Trainer

recipe = Recipe(
    name="autoencode_digits",
    data=DigitsData(batch_size=64),
    # ResNet-20's deepest map is 64 x 8 x 8 at 32 px, pooled to 4 x 4 and projected to a 32-d code (a real
    # bottleneck: without one, the 4,096-number feature map could copy noise through); two stride-2 stages decode it.
    model=BackboneSpec(name="resnet20", in_chans=1) | Autoencoder(width=64, bottleneck=32),
    loss=ReconstructionLoss(name="l2"),
    optim=Optim(name="adam", lr=2e-3, weight_decay=0.0),
    sched=Schedule(name="cosine"),
    trainer=Trainer(max_epochs=15),
)
