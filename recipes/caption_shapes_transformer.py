"""A small transformer decoder captions the synthetic shapes ("a small red circle in the top left").

ResNet-10-T from scratch; the decoder cross-attends to its 4x4 stride-16 feature grid (``level=-2``) with a 2-D
position embedding, so position words are learnable. 3,000 rendered images, 2,100 train (two captions each) /
450 val / 450 test; beam search (3 beams, length penalty 0.5: the best validation ``cider`` of 0, 0.5, 1 and 2,
see docs/captioning.md) when evaluating.

    zoo train recipes/caption_shapes_transformer.py
"""

from heads import CaptionCrossEntropy, TransformerCaptioner
from zoo.data import ShapesCaptionData
from zoo.recipe import BackboneSpec, Optim, Recipe, Schedule, Trainer

recipe = Recipe(
    name="caption_shapes_transformer",
    data=ShapesCaptionData(num_images=3000, batch_size=32, num_workers=1),
    model=BackboneSpec(name="resnet10t") | TransformerCaptioner(level=-2, dim=128, heads=4, layers=2, ffn=256,
                                                                 beam_size=3, length_penalty=0.5),
    loss=CaptionCrossEntropy(label_smoothing=0.05),
    optim=Optim(name="adamw", lr=1e-3, weight_decay=0.01),
    sched=Schedule(name="cosine", warmup_epochs=1),
    trainer=Trainer(max_epochs=12, gradient_clip_val=1.0),
)
