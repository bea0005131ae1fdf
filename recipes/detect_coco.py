"""Detection on your own COCO-format data with the modern YOLO-style head (PAN neck, anchor-free, TAL, CIoU).

Point it at the images folder (the JSON ``file_name`` entries are relative to it) and the annotation files; the
categories (and so the class names) come from the JSON. Without ``data.test_json`` the validation set is also the
test set. Images are letterboxed to ``data.image_size`` (aspect ratio kept), so predicted boxes map back exactly.

    zoo train recipes/detect_coco.py data.images=DIR data.train_json=train.json data.val_json=val.json
    zoo train recipes/detect_coco.py data.images=DIR data.train_json=train.json data.val_json=val.json \\
        data.test_json=test.json data.image_size=416 model.head.size=small
    zoo predict runs/detect_coco/best.ckpt photos/ --out preds/
"""

import albumentations as A

from heads import Yolo, YoloLoss
from zoo.data.detection import CocoDetectionData
from zoo.recipe import Augment, BackboneSpec, Optim, Recipe, Schedule, Trainer

recipe = Recipe(
    name="detect_coco",
    data=CocoDetectionData(image_size=320, batch_size=16, num_workers=2),
    model=BackboneSpec(name="resnet18") | Yolo(size="nano"),
    loss=YoloLoss(box_loss="ciou"),
    aug=Augment(train=(A.HorizontalFlip(p=0.5), A.ColorJitter(0.2, 0.2, 0.2, 0.02, p=0.5)), resize="letterbox"),
    optim=Optim(name="adamw", lr=1e-3, weight_decay=0.05),
    sched=Schedule(name="cosine", warmup_epochs=2),
    trainer=Trainer(max_epochs=100),
)
