"""A variational autoencoder on digits: LeNet-5 encoder, 8-d latent, Bernoulli likelihood, beta 1.5 with warm-up.

``zoo sample runs/vae_digits/best.ckpt --n 64 --out samples.png`` draws digits from the prior afterwards.

    zoo train recipes/vae_digits.py
"""

from heads import Vae, VaeLoss
from zoo.data import DigitsData
from zoo.recipe import BackboneSpec, Optim, Recipe, Schedule, Trainer

recipe = Recipe(
    name="vae_digits",
    data=DigitsData(batch_size=64),
    # A small latent and beta > 1 keep the posterior close to the prior, so prior samples look like digits
    # (latent 16, beta 1: classifier confidence 0.70; latent 8, beta 1.5: 0.76-0.77 -- docs/autoencoders.md).
    model=BackboneSpec(name="lenet5", in_chans=1) | Vae(latent=8, width=64, likelihood="bernoulli"),
    loss=VaeLoss(beta=1.5, warmup=0.2),
    optim=Optim(name="adam", lr=2e-3, weight_decay=0.0),
    sched=Schedule(name="cosine"),
    trainer=Trainer(max_epochs=60),
)
