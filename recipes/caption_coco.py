"""Captioning your own COCO-style data: an images folder and COCO captions JSON files (several captions per image).

ResNet-18 (timm) encoder, transformer decoder over its deepest feature grid; words seen fewer than 5 times in the
training captions become ``<unk>``. Point it at your files (COCO 2017 shown)::

    zoo train recipes/caption_coco.py data.images=coco data.train_json=coco/annotations/captions_train2017.json \
        data.val_json=coco/annotations/captions_val2017.json

``file_name`` entries of the JSON files are relative to ``data.images``. Add ``model.backbone.pretrained=PATH``
to start from ImageNet weights you have on disk.
"""

from heads import CaptionCrossEntropy, TransformerCaptioner
from zoo.data import CocoCaptionData
from zoo.recipe import BackboneSpec, Optim, Recipe, Schedule, Trainer

recipe = Recipe(
    name="caption_coco",
    data=CocoCaptionData(images="coco", train_json="coco/annotations/captions_train2017.json",
                         val_json="coco/annotations/captions_val2017.json", image_size=224, batch_size=64),
    model=BackboneSpec(name="resnet18") | TransformerCaptioner(dim=512, heads=8, layers=3, ffn=2048, beam_size=3,
                                                               length_penalty=0.7),
    loss=CaptionCrossEntropy(label_smoothing=0.1),
    optim=Optim(name="adamw", lr=3e-4, weight_decay=0.05),
    sched=Schedule(name="cosine", warmup_epochs=1),
    trainer=Trainer(max_epochs=20, gradient_clip_val=1.0),
)
