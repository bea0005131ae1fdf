"""A denoising autoencoder on digits: the autoencoder recipe, trained on noisy inputs against the clean image.

The noise (Gaussian, std 0.3 of the pixel range) is an input-only transform: the target stays the clean image.
To measure it on noisy inputs, evaluate with the same noise: ``aug.input_only_eval`` (docs/autoencoders.md).

    zoo train recipes/denoise_digits.py
"""

import albumentations as A

from recipes.autoencode_digits import recipe as base
from zoo.recipe import Augment

NOISE = A.GaussNoise(std_range=(0.3, 0.3), mean_range=(0.0, 0.0), p=1.0)

recipe = base.override(**{"name": "denoise_digits", "aug": Augment(input_only=(NOISE,))})
