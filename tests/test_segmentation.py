"""Semantic segmentation: mask data adapters, mask-aware augmentation, FCN/U-Net heads, losses, metrics, engine."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from heads import FCN, SEGMENTATION, SegmentationLoss, UNet
from heads.segmentation import SegmentationMetrics, decode_mask, predict_masks
from zoo.backbones import create_backbone
from zoo.data import CocoSegmentationData, MaskFolderData, ShapesSegmentationData
from zoo.data.base import ArraySource, KeyedSource, TransformedDataset
from zoo.data.segmentation import IGNORE_INDEX, load_mask
from zoo.data.targets import SamplePreparer, compose_kwargs_for
from zoo.errors import ZooError
from zoo.recipe import Augment, BackboneSpec, Recipe, Trainer
from zoo.task import Geometry, HeadContext

NEAREST = cv2.INTER_NEAREST
K = 4  # classes in the hand-made examples


def _blocks(h: int, w: int, *, block: int = 4, classes: int = K, seed: int = 0) -> np.ndarray:
    """A mask of ``block``-sized squares of random classes (so a 2x downscale keeps every value exact)."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, classes, (-(-h // block), -(-w // block)))
    return np.kron(cells, np.ones((block, block), np.int64))[:h, :w].astype(np.uint8)


def _encoded(mask: np.ndarray) -> np.ndarray:
    """An RGB image whose red channel is ``50 * class``: every pixel tells which mask value it should carry."""
    return np.stack([mask * 50, np.full_like(mask, 7), np.full_like(mask, 9)], axis=2).astype(np.uint8)


def _through_pipeline(mask: np.ndarray, aug: Augment, *, size: int, train: bool = True):
    """(image red channel decoded to classes, mask) after the task's real pipeline (mean 0, std 1: pixels / 255)."""
    keys = [SEGMENTATION.target]  # "mask"
    pipeline = aug.compose(train=train, size=size, mean=(0, 0, 0), std=(1, 1, 1), **compose_kwargs_for(keys))
    dataset = TransformedDataset(KeyedSource(ArraySource(_encoded(mask)[None], [mask]), "mask"),
                                 SamplePreparer(pipeline, keys))
    image, targets = dataset[0]
    red = (image[0] * 255).round().long()
    return red, targets["mask"]


# ---- the mask follows every geometric transform -----------------------------------------------------------------

GEOMETRIC = {
    "hflip": A.HorizontalFlip(p=1),
    "vflip": A.VerticalFlip(p=1),
    "transpose": A.Transpose(p=1),
    "rotate90": A.RandomRotate90(p=1),
    "rotate": A.Rotate(limit=(20, 40), interpolation=NEAREST, p=1),
    "affine": A.Affine(rotate=(-30, 30), scale=(0.7, 1.3), translate_percent=(-0.2, 0.2), shear=(-10, 10),
                       interpolation=NEAREST, p=1),
    "crop": A.RandomCrop(20, 24, p=1),
    "resized_crop": A.RandomResizedCrop((32, 32), scale=(0.3, 0.9), interpolation=NEAREST, p=1),
    "perspective": A.Perspective(scale=(0.05, 0.1), interpolation=NEAREST, p=1),
    "elastic": A.ElasticTransform(alpha=20, sigma=4, interpolation=NEAREST, p=1),
    "grid_distortion": A.GridDistortion(interpolation=NEAREST, p=1),
}


@pytest.mark.parametrize("name", GEOMETRIC)
def test_mask_follows_geometric_transform(name):
    mask = _blocks(32, 32)
    moved = False
    for _ in range(4):  # random transforms: several draws, each must keep image and mask aligned
        red, target = _through_pipeline(mask, Augment(train=(GEOMETRIC[name],)), size=32)
        assert target.dtype == torch.int64 and target.shape == red.shape
        assert torch.equal(red, target.long() * 50), f"{name}: mask and image disagree"
        moved |= not torch.equal(target, torch.from_numpy(mask).long())
    assert moved, f"{name} never changed the mask: the test would not see a misalignment"


@pytest.mark.parametrize("resize,shape", [("stretch", (64, 64)), ("letterbox", (32, 64)), ("letterbox", (64, 32))])
def test_mask_follows_resize(resize, shape):
    mask = _blocks(*shape, block=4)
    red, target = _through_pipeline(mask, Augment(resize=resize), size=32, train=False)
    assert target.shape == (32, 32)
    assert torch.equal(red, target.long() * 50)
    if resize == "letterbox":  # the padding is background (documented: docs/segmentation.md)
        pad = (target.shape[0] - shape[0] // 2) // 2 if shape[0] < shape[1] else (32 - shape[1] // 2) // 2
        edge = target[:pad] if shape[0] < shape[1] else target[:, :pad]
        assert pad > 0 and (edge == 0).all()


def test_ignore_value_survives_transforms():
    mask = _blocks(32, 32)
    mask[:8] = IGNORE_INDEX
    _, target = _through_pipeline(mask, Augment(train=(A.VerticalFlip(p=1),)), size=32)
    assert (target[-8:] == IGNORE_INDEX).all() and not (target[:-8] == IGNORE_INDEX).any()


# ---- losses -----------------------------------------------------------------------------------------------------

def _random_batch(seed=0, n=2, h=8, w=8):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, K, h, w, generator=g)
    targets = torch.randint(0, K, (n, h, w), generator=g)
    return logits, targets


@pytest.mark.parametrize("name", ["ce", "dice", "ce+dice"])
def test_loss_ignores_ignore_pixels(name):
    loss = SegmentationLoss(name=name).build()
    logits, targets = _random_batch()
    targets[:, :3] = IGNORE_INDEX
    other = logits.clone()
    other[:, :, :3] = torch.randn_like(other[:, :, :3]) * 10  # only ignored pixels change
    logits.requires_grad_(True)
    terms = loss(logits, targets)
    assert set(terms) == set(name.split("+"))
    for key in terms:
        assert torch.allclose(terms[key], loss(other, targets)[key])
    sum(terms.values()).backward()
    assert logits.grad[:, :, :3].abs().max() == 0 and logits.grad[:, :, 3:].abs().max() > 0


def test_cross_entropy_term_is_mean_over_valid_pixels():
    logits, targets = _random_batch()
    targets[0, 0, :5] = IGNORE_INDEX
    valid = targets != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[valid], targets[valid])
    assert torch.allclose(SegmentationLoss(name="ce").build()(logits, targets)["ce"], expected)


def test_dice_is_zero_for_perfect_and_weights_scale():
    _, targets = _random_batch()
    perfect = torch.nn.functional.one_hot(targets, K).permute(0, 3, 1, 2).float() * 100
    assert SegmentationLoss(name="dice").build()(perfect, targets)["dice"] < 1e-3
    logits, _ = _random_batch(1)
    one = SegmentationLoss(name="ce+dice").build()(logits, targets)
    two = SegmentationLoss(name="ce+dice", ce_weight=2.0, dice_weight=3.0).build()(logits, targets)
    assert torch.allclose(two["ce"], 2 * one["ce"]) and torch.allclose(two["dice"], 3 * one["dice"])


def test_all_ignored_batch_gives_finite_zero_loss():
    logits, _ = _random_batch()
    targets = torch.full((2, 8, 8), IGNORE_INDEX)
    terms = SegmentationLoss(name="ce+dice").build()(logits, targets)
    assert all(torch.isfinite(v) for v in terms.values()) and terms["ce"] == 0


# ---- metrics ----------------------------------------------------------------------------------------------------

def test_miou_and_pixel_acc_equal_torchmetrics_with_ignore():
    metrics = SegmentationMetrics(["background", "a", "b", "c"])
    jaccard = MulticlassJaccardIndex(num_classes=K, ignore_index=IGNORE_INDEX, average="macro")
    accuracy = MulticlassAccuracy(num_classes=K, ignore_index=IGNORE_INDEX, average="micro")
    per_class = MulticlassJaccardIndex(num_classes=K, ignore_index=IGNORE_INDEX, average="none")
    for seed in range(3):
        logits, targets = _random_batch(seed, h=16, w=16)
        targets[:, :4] = IGNORE_INDEX
        metrics.update(logits, targets)
        for m in (jaccard, accuracy, per_class):
            m.update(logits.argmax(1), targets)
    result = metrics.compute()
    assert result["miou"] == pytest.approx(jaccard.compute().item(), abs=1e-6)
    assert result["pixel_acc"] == pytest.approx(accuracy.compute().item(), abs=1e-6)
    for name, value in zip(["background", "a", "b", "c"], per_class.compute().tolist()):
        assert result[f"iou/{name}"] == pytest.approx(value, abs=1e-6)


def test_metrics_do_not_see_ignored_pixels():
    logits, targets = _random_batch(h=16, w=16)
    targets[:, 8:] = IGNORE_INDEX
    changed = logits.clone()
    changed[:, :, 8:] = -changed[:, :, 8:]  # other predictions where the truth is ignored
    values = []
    for outputs in (logits, changed):
        metrics = SegmentationMetrics(["background", "a", "b", "c"])
        metrics.update(outputs, targets)
        values.append(metrics.compute())
    assert values[0] == values[1]
    metrics = SegmentationMetrics(["background", "a", "b", "c"])
    perfect = torch.nn.functional.one_hot(targets.clamp(max=K - 1), K).permute(0, 3, 1, 2).float()
    metrics.update(perfect, targets)
    assert metrics.compute()["miou"] == 1.0 and metrics.compute()["pixel_acc"] == 1.0


def test_iou_picture(tmp_path):
    metrics = SegmentationMetrics(["background", "a", "b", "c"])
    metrics.update(*_random_batch())
    metrics.compute()
    (path,) = metrics.save_artifacts(tmp_path)
    assert path.name == "iou_per_class.png" and Image.open(path).size[0] > 50


# ---- heads on different backbones -------------------------------------------------------------------------------

@pytest.mark.parametrize("backbone", ["resnet10t", "resnet20", "vgg11_a", "lenet5"])
@pytest.mark.parametrize("head", [FCN(levels=3, hidden=16), FCN(levels=1, hidden=0), UNet(width=8)],
                         ids=["fcn8s", "fcn32s", "unet"])
def test_heads_give_full_resolution_logits(backbone, head):
    net = create_backbone(backbone, pretrained=False, in_chans=3)
    module = head.build(net.feature_info, num_classes=3)
    images = torch.randn(2, 3, 32, 32)
    logits = module(net(images), images)
    assert logits.shape == (2, 3, 32, 32) or backbone == "lenet5"  # lenet5's unpadded convs: resized by the loss
    terms = SegmentationLoss(name="ce+dice").build()(logits, torch.randint(0, 3, (2, 32, 32)))
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in module.parameters() if p.requires_grad)


def test_fcn_deconvolution_starts_as_bilinear_upsampling():
    from heads.segmentation import _deconv

    layer = _deconv(2, 4)
    x = torch.ones(1, 2, 4, 4)
    y = layer(x)
    assert y.shape == (1, 2, 16, 16)
    assert torch.allclose(y[:, :, 4:12, 4:12], torch.ones(1, 2, 8, 8))  # a constant stays constant inside


# ---- data adapters ----------------------------------------------------------------------------------------------

def write_mask_folder(root: Path, count: int = 6, *, size=(16, 20), values=K) -> Path:
    """``root/images/<i>.png|jpg`` with ``root/masks/<i>.png`` of ``values`` classes in blocks (shared fixture)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        mask = _blocks(*size, classes=values, seed=i)
        Image.fromarray(_encoded(mask)).save(root / "images" / f"{i}.jpg" if i % 2 else root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


def test_mask_folder_reads_pairs_and_maps_ignore(tmp_path):
    root = write_mask_folder(tmp_path)
    mask = np.array(Image.open(root / "masks" / "0.png"))
    mask[0, :3] = 200  # this dataset's ignore value
    Image.fromarray(mask).save(root / "masks" / "0.png")
    splits = MaskFolderData(root=str(root), ignore_index=200, val_fraction=0.2, test_fraction=0.2).setup()
    assert splits.classes == {"mask": ("background", "1", "2", "3")}  # numbered from the masks
    assert len(splits.train) + len(splits.val) + len(splits.test) == 6
    for source in (splits.train, splits.val, splits.test):
        for i in range(len(source)):
            image, targets = source.load(i)
            assert set(targets) == {"mask"}
            target = targets["mask"]
            assert image.shape == (16, 20, 3) and target.shape == (16, 20) and target.dtype == np.uint8
            if source.source.masks[i].stem == "0":  # the adapter's MaskSource inside the keyed source
                assert (target[0, :3] == IGNORE_INDEX).all() and not (target[1:] == IGNORE_INDEX).any()


def test_mask_folder_split_folders_and_class_names(tmp_path):
    for split in ("train", "val"):
        write_mask_folder(tmp_path / split, 4)
    splits = MaskFolderData(root=str(tmp_path), classes=("bg", "a", "b", "c"), test_fraction=0.25).setup()
    assert splits.classes == {"mask": ("bg", "a", "b", "c")}
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3, 4, 1)


def test_mask_of_other_size_names_both_shapes_and_file(tmp_path):
    root = write_mask_folder(tmp_path, 3)
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(root / "masks" / "2.png")
    with pytest.raises(ZooError, match=r"2\.png.*10x20.*16x20"):
        MaskFolderData(root=str(root)).setup()


def test_missing_mask_is_named(tmp_path):
    root = write_mask_folder(tmp_path, 3)
    (root / "masks" / "1.png").unlink()
    with pytest.raises(ZooError, match=r"no mask.*1\.jpg"):
        MaskFolderData(root=str(root)).setup()


def test_bad_mask_values_and_colour_masks_are_refused(tmp_path):
    root = write_mask_folder(tmp_path, 3)
    splits = MaskFolderData(root=str(root), classes=("bg", "a"), val_fraction=0, test_fraction=0).setup()
    with pytest.raises(ZooError, match=r"outside the 2 classes"):
        [splits.train.load(i) for i in range(len(splits.train))]
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[0, 0] = (10, 20, 30)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(ZooError, match="colour"):
        load_mask(tmp_path / "colour.png")
    with pytest.raises(Exception, match="data.root"):
        MaskFolderData(root=None).setup()


def test_shapes_segmentation_masks_match_rendered_files():
    data = ShapesSegmentationData(num_images=20, val_fraction=0.2, test_fraction=0.2)
    splits = data.setup()
    assert splits.classes == {"mask": ("background", "circle", "square", "triangle")}
    image, targets = splits.train.load(0)
    mask = targets["mask"]
    assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
    assert np.array_equal(mask, np.array(Image.open(splits.train.source.masks[0])))
    assert set(np.unique(mask)) <= {0, 1, 2, 3} and len(np.unique(mask)) > 1


def _coco_file(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    square = np.zeros((20, 30), np.uint8)
    square[2:6, 20:26] = 1
    rle = coco_mask.encode(np.asfortranarray(square))
    crowd = np.zeros((20, 30), np.uint8)
    crowd[15:20, 0:5] = 1
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]],
             "bbox": [0, 0, 10, 10]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [20, 2, 6, 4],
             "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}},
            {"id": 3, "image_id": 1, "category_id": 7, "iscrowd": 1, "bbox": [0, 15, 5, 5],
             "segmentation": {"size": [20, 30], "counts": _uncompressed(crowd)}},
        ],
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    return path


def _uncompressed(bits: np.ndarray) -> list[int]:
    """Column-major run lengths starting with zeros: COCO's uncompressed RLE."""
    flat = bits.T.ravel()
    runs, current, count = [], 0, 0
    for v in flat:
        if v == current:
            count += 1
        else:
            runs.append(count)
            current, count = v, 1
    return runs + [count]


def test_coco_polygons_and_rle_are_rasterised(tmp_path):
    path = _coco_file(tmp_path)
    data = CocoSegmentationData(images=str(tmp_path / "img"), train_json=str(path), val_json=str(path))
    splits = data.setup()
    assert splits.classes == {"mask": ("background", "cat", "dog")}
    image, targets = splits.train.load(0)
    mask = targets["mask"]
    assert image.shape == (20, 30, 3) and mask.shape == (20, 30)
    assert (mask[1:9, 1:9] == 1).all() and not (mask[11:, :] == 1).any()  # polygon → cat (label 0 + 1)
    assert np.array_equal(mask == 2, np.pad(np.ones((4, 6), bool), ((2, 14), (20, 4))))  # compressed RLE → dog
    assert np.array_equal(mask == IGNORE_INDEX, np.pad(np.ones((5, 5), bool), ((15, 0), (0, 25))))  # crowd


def test_coco_adapter_reproduces_the_shapes_masks():
    """The shapes set's COCO polygons (drawn in file order, later objects on top) give its rendered masks, up to the
    circles' 32-gon approximation at the edges."""
    from zoo.data.shapes import shapes_root

    shapes = ShapesSegmentationData(num_images=20)
    root = shapes_root(shapes.config(), shapes.cache_dir)
    json_path = str(root / "annotations.json")
    coco = CocoSegmentationData(images=str(root), train_json=json_path, val_json=json_path).setup()
    assert coco.classes == {"mask": shapes.static_classes()}
    agreement = []
    for i in range(len(coco.train)):
        _, targets = coco.train.load(i)
        mask = targets["mask"]
        agreement.append((mask == load_mask(root / "masks" / coco.train.source.images[i].name)).mean())
    assert min(agreement) > 0.98 and np.mean(agreement) > 0.995


def test_coco_size_disagreement_is_an_error(tmp_path):
    path = _coco_file(tmp_path)
    data = json.loads(path.read_text())
    data["images"][0]["height"] = 25
    path.write_text(json.dumps(data))
    splits = CocoSegmentationData(images=str(tmp_path / "img"), train_json=str(path), val_json=str(path)).setup()
    with pytest.raises(ZooError, match=r"image id 1.*25x30.*a\.png.*20x30"):
        splits.train.load(0)


# ---- predictions and the engine -----------------------------------------------------------------------------------

def test_predict_masks_back_on_the_original_image():
    logits = torch.zeros(1, 3, 32, 32)
    logits[0, 2, 8:24, :] = 5  # a 16x32 image letterboxed into 32x32 fills rows 8..23
    spec = UNet(width=8)
    module = spec.build(create_backbone("resnet10t", pretrained=False, in_chans=3).feature_info, num_classes=3)
    head = HeadContext("", spec, module, ("background", "a", "b"))
    geometry = Geometry(input_size=(32, 32), image_sizes=[(16, 32)], resize="letterbox")
    (result,) = predict_masks(logits, head, geometry)
    mask = decode_mask(result, ["background", "a", "b"])
    assert mask.shape == (16, 32) and (mask == 2).all()  # the padding rows are cut away
    assert result["class_share"] == {"b": 1.0}
    assert "rle" in result and len(json.dumps(result)) < 400


def _tiny_recipe(**overrides) -> Recipe:
    recipe = Recipe(
        name="tiny_seg",
        data=ShapesSegmentationData(num_images=20, image_size=32, batch_size=4, num_workers=0, val_fraction=0.2,
                                    test_fraction=0.2),
        model=BackboneSpec(name="resnet10t") | UNet(width=8),
        loss=SegmentationLoss(name="ce+dice"),
        aug=Augment(train=(A.HorizontalFlip(p=0.5),)),
        trainer=Trainer(max_epochs=1, accelerator="cpu", devices=1, limit_train_batches=2, limit_val_batches=1),
    )
    return recipe.override(**overrides)


def test_train_evaluate_predict_writes_masks_and_pictures(tmp_path):
    from zoo.engine import evaluate, predict, train

    run = tmp_path / "run"
    metrics = train(_tiny_recipe(), run)
    assert {"miou", "pixel_acc", "iou/background"} <= set(metrics) and 0 <= metrics["miou"] <= 1
    assert (run / "predictions_test.png").is_file() and (run / "iou_per_class.png").is_file()
    assert evaluate(run / "best.ckpt", split="val")["miou"] >= 0
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.fromarray(np.full((24, 40, 3), 90, np.uint8)).save(inputs / "wide.png")
    out = tmp_path / "pred"
    (result,) = predict(run / "best.ckpt", [inputs], out=out)
    saved = np.array(Image.open(out / "masks" / "00000_wide.png"))
    assert saved.shape == (24, 40) and saved.max() < 4  # original size, class indices
    assert np.array_equal(saved, decode_mask(result, ["background", "circle", "square", "triangle"]))
    assert (out / "images" / "00000_wide.png").is_file()
    assert sum(json.loads((out / "predictions.json").read_text())[0]["class_share"].values()) == pytest.approx(1)
