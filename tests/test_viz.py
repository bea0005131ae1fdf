"""``zoo viz``: every picture of the trained tiny digits checkpoint, the numbers behind them, errors, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from zoo.backbones.base import FeatureInfo
from zoo.cli import main
from zoo.errors import ZooError
from zoo.viz import (PICTURES, Subject, grad_cam, guided_backprop, layer_activations, load_subject, prepare_image,
                     saliency_map, top_activating, visualize)


@pytest.fixture(scope="module")
def subject(trained_checkpoint) -> Subject:
    return load_subject(trained_checkpoint)


@pytest.fixture(scope="module")
def image(subject) -> torch.Tensor:
    return prepare_image(subject)[0]  # the first test image, [1, 1, 32, 32]


@pytest.fixture(scope="module")
def all_pictures(trained_checkpoint, tmp_path_factory) -> list[Path]:
    return visualize(trained_checkpoint, "all", out=tmp_path_factory.mktemp("viz"))


def _png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        return im.size


def test_all_writes_every_picture_as_a_png_of_reasonable_size(all_pictures):
    assert len(all_pictures) == len(PICTURES)
    for path, what in zip(all_pictures, PICTURES):
        assert path.name.startswith(what) and path.is_file()
        w, h = _png_size(path)
        assert 200 <= w <= 2000 and 200 <= h <= 2000, (path.name, w, h)


def test_gradcam_of_the_predicted_class_is_not_constant(subject, image):
    cam, k, level = grad_cam(subject, image)
    assert k == int(subject.model(image).argmax())
    assert cam.shape == (32, 32) and cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    assert cam.std() > 0.01
    # LeNet-5's deepest map (C5) is 1x1 at 32x32: the default is the deepest one with a spatial extent (S4, 5x5).
    assert level == 1
    assert grad_cam(subject, image, layer=-1)[0].std() < 1e-4


def test_saliency_is_the_largest_absolute_input_gradient(subject, image):
    sal, k = saliency_map(subject, image, wanted=3)
    x = image.clone().requires_grad_(True)
    subject.model(x)[0, 3].backward()
    assert k == 3
    np.testing.assert_allclose(sal, x.grad[0].abs().amax(0).numpy(), rtol=1e-5)


class _OneReluNet(nn.Module):
    """x [1, 1, H, W] → 1x1 conv (weights w) → ReLU → score = sum of v_c * mean over pixels."""

    def __init__(self, w: list[float], v: list[float]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, len(w), 1, bias=False)
        self.conv.weight.data = torch.tensor(w).view(-1, 1, 1, 1)
        self.relu = nn.ReLU(inplace=True)  # in place, as most backbones have it
        self.v = torch.tensor(v)
        self.feature_info = [FeatureInfo(len(w), 1, "relu")]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x]  # no backbone: the head reads the input itself

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.relu(self.conv(x))
        return torch.stack([(z.mean((2, 3)) * self.v).sum(1), torch.zeros(len(x))], 1)  # logits [N, 2]


class _ToyHead(nn.Module):
    """The toy net as a built head: ``head(features, images, target=None) -> logits [N, 2]``."""

    def __init__(self, net: _OneReluNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, features: list[torch.Tensor], images: torch.Tensor, target: object = None) -> torch.Tensor:
        return self.net(features[0])


def test_guided_backprop_passes_only_positive_gradients_where_the_input_was_positive():
    w, v = [1.0, -2.0, 3.0], [0.5, 4.0, -1.0]
    net = _OneReluNet(w, v)
    x = torch.tensor([[[[1.0, -1.0], [2.0, 0.0]]]])
    from heads.classification import explain_class

    s = Subject(name="toy", backbone=net, model=net, input_shape=(1, 2, 2), mean=(0.0,), std=(1.0,),
                transform=None, classes=["a", "b"], head=_ToyHead(net), explain=explain_class)
    g, k = guided_backprop(s, x, wanted=0)
    z = torch.tensor(w).view(-1, 1, 1) * x[0]  # [3, 2, 2] pre-activations
    expected = (torch.tensor(w).view(-1, 1, 1) * torch.tensor(v).clamp(min=0).view(-1, 1, 1) / 4 * (z > 0)).sum(0)
    plain = (torch.tensor(w).view(-1, 1, 1) * torch.tensor(v).view(-1, 1, 1) / 4 * (z > 0)).sum(0)
    assert k == 0
    np.testing.assert_allclose(g[..., 0], expected.numpy(), rtol=1e-6)
    assert not np.allclose(g[..., 0], plain.numpy())  # the guided rule changed something
    assert not any(m._forward_hooks for m in net.modules())  # hooks removed


def test_activations_cover_every_layer_in_call_order(subject, image):
    names = [n for n, _ in layer_activations(subject.backbone, image)]
    assert names == ["c1.0", "c1.1", "s2", "c3.0", "c3.1", "s4", "c5.0", "c5.1"]


def test_topk_returns_the_most_activating_images_best_first(subject):
    hits = top_activating(subject, layer=1, unit=2, k=4, split="val")
    scores = [s for _, s, _, _ in hits]
    assert len(hits) == 4 and scores == sorted(scores, reverse=True)
    with torch.no_grad():
        images = torch.stack([im for _, _, im, _ in hits])
        again = subject.backbone(images)[1][:, 2].mean((1, 2))
    np.testing.assert_allclose(again.numpy(), scores, rtol=1e-4)
    from zoo.engine.run import prepare_data

    val = prepare_data(subject.recipe).val
    for i, _, im, target in hits:  # the index is the image's place in the split
        pixels, targets = val.load(i)
        assert targets["label"] == target
        torch.testing.assert_close(subject.transform(image=pixels)["image"].float(), im)
    rest = top_activating(subject, layer=1, unit=2, k=10_000, split="val")
    assert len(rest) == 180 and max(s for _, s, _, _ in rest[4:]) <= scores[-1]


def test_bad_values_are_named_with_what_is_valid(trained_checkpoint, tmp_path):
    cases = [({"wanted": "cat", "what": "saliency"}, ["'cat'", "indices 0..9"]),
             ({"unit": 16, "layer": 1, "what": "topk"}, ["--unit 16", "valid 0..15"]),
             ({"layer": 3, "what": "gradcam"}, ["--layer 3", "valid -3..2", "s4"]),
             ({"what": "deconv"}, ["'deconv'", "gradcam"])]
    for kwargs, words in cases:
        with pytest.raises(ZooError) as info:
            visualize(trained_checkpoint, out=tmp_path, **kwargs)
        assert all(w in str(info.value) for w in words), (str(info.value), words)


def test_backbone_name_gives_filters_and_activations_only(tmp_path):
    file = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24), dtype=np.uint8)).save(file)
    paths = visualize("lenet5", "all", image=file, out=tmp_path / "out")
    assert [p.name for p in paths] == ["filters.png", "activations.png"]
    for what in ("saliency", "guided", "gradcam", "topk"):
        with pytest.raises(ZooError, match=f"--what {what} needs a trained checkpoint"):
            visualize("lenet5", what, image=file, out=tmp_path)
    with pytest.raises(ZooError, match="pass --image FILE"):
        visualize("lenet5", "activations", out=tmp_path)
    with pytest.raises(ZooError, match="did you mean 'lenet5'"):
        visualize("lenet55", "filters", out=tmp_path)


def test_cli_writes_pictures_and_reports_errors(trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["viz", str(trained_checkpoint), "--what", "gradcam", "--class", "7", "--out", str(out)]) == 0
    assert (out / "gradcam_7.png").is_file() and f"wrote {out / 'gradcam_7.png'}" in capsys.readouterr().out
    assert main(["viz", str(trained_checkpoint), "--what", "topk", "--unit", "5", "--layer", "0", "--top-k", "4",
                 "--split", "test", "--out", str(out)]) == 0
    assert (out / "topk_l0_u5.png").is_file()
    assert main(["viz", str(trained_checkpoint), "--what", "saliency", "--class", "cat", "--out", str(out)]) == 2
    assert "--class 'cat'" in capsys.readouterr().err
    assert main(["viz", "lenet5", "--what", "gradcam", "--out", str(out)]) == 2
    assert "needs a trained checkpoint" in capsys.readouterr().err
    assert main(["viz", str(tmp_path / "missing.ckpt"), "--out", str(out)]) == 2
    assert "missing.ckpt does not exist" in capsys.readouterr().err


def test_cli_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        main(["viz", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--what", "--image", "--out", "--class", "--unit", "--layer", "--top-k", "--split", "--pretrained",
                   *PICTURES):
        assert option in text


class _Tapped(torch.nn.Module):
    """Backbone → head with an identity on one feature level, so pytorch-grad-cam can hook the map zoo reads."""

    def __init__(self, backbone, head, level: int, reduce=None) -> None:
        super().__init__()
        self.backbone, self.head, self.level, self.reduce = backbone, head, level, reduce
        self.tap = torch.nn.Identity()

    def forward(self, x):
        feats = list(self.backbone(x))
        feats[self.level] = self.tap(feats[self.level])
        out = self.head(feats, x)
        return self.reduce(out) if self.reduce else out


def test_grad_cam_of_segmentation_and_detection_equals_pytorch_grad_cam():
    """Segmentation explains a class's predicted pixels (pytorch-grad-cam's SemanticSegmentationTarget), detection
    the class's best box score; both maps equal pytorch-grad-cam's up to its min-max scaling."""
    gradcam = pytest.importorskip("pytorch_grad_cam", reason="pip install grad-cam (the dev extra installs it)")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, SemanticSegmentationTarget

    from heads import UNet, Yolo
    from heads.detection import DETECTION
    from heads.segmentation import SEGMENTATION
    from zoo.recipe import BackboneSpec

    torch.manual_seed(0)
    net = BackboneSpec(name="resnet10t").build().eval()
    segmenter = UNet(width=8).build(net.feature_info, num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    detector = Yolo().build(net.feature_info, num_classes=3).eval()
    level = 3
    cases = [(segmenter, SEGMENTATION, None), (detector, DETECTION, lambda out: out["scores"].amax(1))]
    for head, task, reduce in cases:
        model = _Tapped(net, head, level, reduce).eval()
        subject = Subject(name="t", backbone=net, model=model, input_shape=(3, 64, 64), mean=(0.5,) * 3,
                          std=(0.25,) * 3, transform=None, classes=["a", "b", "c"], head=head, explain=task.explain)
        compared = 0
        for k in range(3):  # an untrained model: some classes have no positive evidence (an all-zero map)
            ours, k, used = grad_cam(subject, x, k, layer=level)
            assert used == level
            if not ours.max() > ours.min():
                continue
            if task is SEGMENTATION:
                with torch.no_grad():
                    mask = (model(x)[0].argmax(0) == k).float().numpy()
                target = SemanticSegmentationTarget(k, mask)
            else:
                target = ClassifierOutputTarget(k)
            theirs = gradcam.GradCAM(model=model, target_layers=[model.tap])(input_tensor=x, targets=[target])[0]
            scaled = (ours - ours.min()) / (ours.max() - ours.min())
            assert np.abs(scaled - theirs).max() < 1e-4, (task.name, k)
            compared += 1
        assert compared, f"{task.name}: no class with a non-constant map to compare"
