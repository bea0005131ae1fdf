"""A variational autoencoder on digits: LeNet-5 encoder, 16-d latent, Bernoulli likelihood, KL warm-up.

``zoo sample runs/vae_digits/best.ckpt --n 64 --out samples.png`` draws digits from the prior afterwards.

    zoo train recipes/vae_digits.py
"""

from heads import Vae, VaeLoss
from zoo.data import DigitsData
from zoo.recipe import BackboneSpec, Optim, Recipe, Schedule, Trainer

recipe = Recipe(
    name="vae_digits",
    data=DigitsData(batch_size=64),
    model=BackboneSpec(name="lenet5", in_chans=1) | Vae(latent=16, width=64, likelihood="bernoulli"),
    loss=VaeLoss(beta=1.0, warmup=0.2),
    optim=Optim(name="adam", lr=2e-3, weight_decay=0.0),
    sched=Schedule(name="cosine"),
    trainer=Trainer(max_epochs=40),
)
