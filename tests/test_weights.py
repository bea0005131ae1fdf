"""Pretrained and offline weight loading: zoo and library file layouts, load reports, refusal of pickled code,
and library caches that are looked up but never downloaded into."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torchvision.models.feature_extraction import create_feature_extractor

from zoo.backbones import Backbone, create_backbone
from zoo.errors import CheckpointError, ZooError
from zoo.weights import load_state_dict_report, read_weights_file


def _fresh(name: str, seed: int, **kwargs) -> Backbone:
    torch.manual_seed(seed)
    return create_backbone(name, **kwargs)


def _outputs(backbone: Backbone, in_chans: int, size: int) -> list[torch.Tensor]:
    torch.manual_seed(123)
    with torch.no_grad():
        return backbone.eval()(torch.randn(2, in_chans, size, size))


def _save(path: Path, state: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


# --- the zoo's own layouts: exported state dicts and training checkpoints ---

LAYOUTS = ("safetensors", "torch", "lightning")


def _save_in_layout(layout: str, body_state: dict[str, torch.Tensor], folder: Path) -> Path:
    """``Backbone.body``'s tensors as the zoo writes them: an exported state dict or a training checkpoint."""
    if layout == "lightning":
        checkpoint = {"state_dict": {f"model.backbone.body.{k}": v for k, v in body_state.items()}, "epoch": 3}
        return _save(folder / "last.ckpt", checkpoint)
    suffix = ".safetensors" if layout == "safetensors" else ".pth"
    return _save(folder / f"backbone{suffix}", {f"body.{k}": v for k, v in body_state.items()})


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("name", "in_chans", "size"), [("lenet5", 1, 32), ("resnet10t", 3, 64),
                                                         ("torchvision/resnet18", 3, 64)])
def test_zoo_layouts_round_trip(name: str, in_chans: int, size: int, layout: str, tmp_path: Path) -> None:
    source = _fresh(name, 0, in_chans=in_chans).train()
    with torch.no_grad():  # moves BatchNorm statistics off their initial values, so buffers must load too
        source(torch.randn(4, in_chans, size, size))
    path = _save_in_layout(layout, source.body.state_dict(), tmp_path)
    loaded = _fresh(name, 1, pretrained=str(path), in_chans=in_chans)
    for a, b in zip(_outputs(source, in_chans, size), _outputs(loaded, in_chans, size), strict=True):
        assert torch.equal(a, b)


# --- the libraries' own layouts ---


def test_torchvision_layout_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = torchvision.models.resnet18(weights=None).state_dict()  # conv1.weight ... fc.bias
    path = _save(tmp_path / "resnet18.pth", state)
    with caplog.at_level(logging.INFO, logger="zoo.weights"):
        backbone = create_backbone("torchvision/resnet18", pretrained=str(path))
    assert torch.equal(backbone.body.conv1.weight, state["conv1.weight"])
    assert torch.equal(backbone.body.state_dict()["layer4.1.bn2.running_var"], state["layer4.1.bn2.running_var"])
    assert str(path) in caplog.text and "transferred" in caplog.text


def test_timm_layout_file(tmp_path: Path) -> None:
    state = timm.create_model("resnet18").state_dict()
    path = _save(tmp_path / "resnet18.safetensors", state)
    backbone = create_backbone("resnet18", pretrained=str(path))
    assert backbone.source == "timm"
    assert torch.equal(backbone.body.conv1.weight, state["conv1.weight"])
    assert torch.equal(backbone.body.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


@pytest.mark.parametrize("origin", ["another architecture", "feature-wrapper keys"])
def test_timm_file_that_loads_nothing_is_refused(origin: str, tmp_path: Path) -> None:
    """timm loads feature extractors non-strictly: a file that fits nothing must fail, not leave random weights."""
    if origin == "another architecture":
        state = timm.create_model("resnet18").state_dict()
    else:  # an unprefixed body.state_dict(): timm's wrapper renamed stages.0 to stages_0
        state = _fresh("convnext_atto", 0).body.state_dict()
    path = _save(tmp_path / "weights.pth", state)
    with pytest.raises(ZooError, match=re.escape(str(path))):
        create_backbone("convnext_atto", pretrained=str(path))


@pytest.mark.parametrize("name", ["torchvision/resnet18", "resnet18"])
def test_library_weights_adapt_to_one_input_channel(name: str, tmp_path: Path) -> None:
    """RGB filters summed into one grey channel, the way timm adapts its own first layers."""
    if name.startswith("torchvision/"):
        state = torchvision.models.resnet18(weights=None).state_dict()
        path = _save(tmp_path / "resnet18.pth", state)
    else:
        state = timm.create_model("resnet18").state_dict()
        path = _save(tmp_path / "resnet18.safetensors", state)
    backbone = create_backbone(name, pretrained=str(path), in_chans=1)
    assert backbone.body.conv1.weight.shape == (64, 1, 7, 7)
    torch.testing.assert_close(backbone.body.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(backbone.body.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    assert [m.shape[1] for m in _outputs(backbone, 1, 64)] == [f.channels for f in backbone.feature_info]


# --- the load report ---


def test_load_report_lists_what_did_not_transfer(caplog: pytest.LogCaptureFixture) -> None:
    body = _fresh("lenet5", 0).body
    before = {k: v.clone() for k, v in body.state_dict().items()}
    state = {k: torch.randn_like(v) for k, v in before.items()}
    state["c1.0.weight"] = torch.randn(6, 2, 5, 5)  # another input channel count
    state["f6.weight"] = torch.randn(84, 120)  # a classifier the backbone doesn't have
    del state["c5.0.bias"]
    with caplog.at_level(logging.INFO, logger="zoo.weights"):
        report = load_state_dict_report(body, state, what="test weights")
    assert report.reinitialised == ["c1.0.weight"]
    assert report.unexpected == ["f6.weight"]
    assert report.missing == ["c5.0.bias"]
    assert sorted(report.transferred) == sorted(set(before) - {"c1.0.weight", "c5.0.bias"})
    after = body.state_dict()
    assert torch.equal(after["c1.0.weight"], before["c1.0.weight"])  # left as initialised
    assert torch.equal(after["c5.0.bias"], before["c5.0.bias"])
    assert torch.equal(after["c3.0.weight"], state["c3.0.weight"])
    record = next(r for r in caplog.records if r.name == "zoo.weights")
    assert "test weights" in record.getMessage() and "transferred" in record.getMessage()
    assert "c1.0.weight" in record.getMessage() and "f6.weight" in record.getMessage()


def test_checkpoint_with_other_input_channels_loads_the_rest(tmp_path: Path) -> None:
    rgb = _fresh("lenet5", 0, in_chans=3)
    path = _save_in_layout("safetensors", rgb.body.state_dict(), tmp_path)
    grey = create_backbone("lenet5", pretrained=str(path), in_chans=1)  # c1 is re-initialised, not a crash
    assert grey.body.c1[0].weight.shape == (6, 1, 5, 5)
    assert torch.equal(grey.body.c3[0].weight, rgb.body.c3[0].weight)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path = _save_in_layout("safetensors", _fresh("resnet10t", 0).body.state_dict(), tmp_path)
    with pytest.raises(CheckpointError, match="another architecture"):
        create_backbone("lenet5", pretrained=str(path))


# --- files that are not plain tensors ---


class _WritesMarker:
    """Unpickling this object would create a file: the stand-in for code smuggled into a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("suffix", [".pt", ".ckpt"])
def test_pickled_objects_are_refused_without_running(suffix: str, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / f"evil{suffix}"
    torch.save({"x": _WritesMarker(marker), "w": torch.zeros(1)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as info:
        read_weights_file(path)
    assert str(path) in str(info.value) and "refused" in str(info.value)
    assert "weights_only=False" not in str(info.value)  # torch's hint would nudge users to the unsafe path
    with pytest.raises(CheckpointError, match="refused"):
        create_backbone("lenet5", pretrained=str(path))
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the control: unpickling it does run the payload
    assert marker.exists()


def test_corrupt_safetensors_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        read_weights_file(path)


def test_missing_file_and_weightless_zoo_backbone() -> None:
    with pytest.raises(ZooError, match=re.escape("nonexistent/file.pth")):
        create_backbone("lenet5", pretrained="nonexistent/file.pth")
    with pytest.raises(ZooError, match="no published weights"):
        create_backbone("lenet5", pretrained=True)
    with pytest.raises(ZooError, match="no published weights"):
        create_backbone("lenet5", pretrained="IMAGENET1K_V1")  # a tag, not a file


# --- library caches: looked up, never downloaded into ---


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TORCH_HOME and the Hugging Face cache in an empty folder (huggingface_hub reads its cache at import)."""
    import huggingface_hub.constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    assert Path(torch.hub.get_dir()) == tmp_path / "torch" / "hub"  # torch.hub.set_dir was not called
    return tmp_path


def _places(error: CheckpointError) -> list[Path]:
    """The file locations a cache-miss message asks for, one per indented line."""
    return [Path(line.strip()) for line in str(error).splitlines() if line.startswith("  ")]


def _miss(name: str, **kwargs) -> CheckpointError:
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="not in the local cache") as info:
        create_backbone(name, pretrained=True, **kwargs)
    assert time.monotonic() - start < 10, "a cache miss must not wait on the network"
    return info.value


def test_torchvision_cache_miss_then_hit(empty_caches: Path) -> None:
    url = torchvision.models.get_model_weights("resnet18").DEFAULT.url
    expected = empty_caches / "torch" / "hub" / "checkpoints" / os.path.basename(url)
    assert _places(_miss("torchvision/resnet18")) == [expected]
    state = torchvision.models.resnet18(weights=None).state_dict()
    _save(expected, state)
    backbone = create_backbone("torchvision/resnet18", pretrained=True)
    assert torch.equal(backbone.body.conv1.weight, state["conv1.weight"])


@pytest.mark.parametrize("place", [0, 1], ids=["hf-hub", "torch-hub"])
def test_timm_cache_miss_then_hit(place: int, empty_caches: Path) -> None:
    places = _places(_miss("resnet18"))
    assert places[0] == empty_caches / "hf" / "hub" / "models--timm--resnet18.a1_in1k" / "snapshots" / "main" / (
        "model.safetensors")
    assert places[1].parent == empty_caches / "torch" / "hub" / "checkpoints"
    state = timm.create_model("resnet18").state_dict()
    _save(places[place], state)  # each place the message names really is looked in
    backbone = create_backbone("resnet18", pretrained=True)
    assert torch.equal(backbone.body.conv1.weight, state["conv1.weight"])


def test_unknown_weight_tags(empty_caches: Path) -> None:
    with pytest.raises(CheckpointError, match="IMAGENET1K_V1"):  # lists the known tags
        create_backbone("torchvision/resnet18", pretrained="NOSUCH_V9")
    with pytest.raises(CheckpointError, match=r"resnet18\.nosuch.*a1_in1k"):
        create_backbone("resnet18", pretrained="nosuch")


@pytest.mark.parametrize("name", ["resnet18", "googlenet"])
def test_torchvision_weights_give_the_library_model_features(name: str, empty_caches: Path) -> None:
    """Our backbone with torchvision's weights computes what torchvision's own pretrained model computes
    (googlenet's builder also changes the architecture when it is given weights)."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    extra = {"aux_logits": True, "init_weights": True} if name == "googlenet" else {}  # as its weights were saved
    full = torchvision.models.get_model(name, weights=None, **extra)
    _save(Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url), full.state_dict())
    reference = torchvision.models.get_model(name, weights=weights)  # reads the cached file: nothing downloaded
    backbone = create_backbone(f"torchvision/{name}", pretrained=True)
    cut = create_feature_extractor(reference, return_nodes={f.module: f.module for f in backbone.feature_info})
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = list(cut.eval()(x).values())
        got = backbone.eval()(x)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_empty_and_random_files_are_named_as_such_not_as_pickled_code(tmp_path: Path) -> None:
    empty, noise = tmp_path / "empty.ckpt", tmp_path / "noise.ckpt"
    empty.write_bytes(b"")
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match=r"empty.ckpt: the file is empty \(0 bytes\)"):
        read_weights_file(empty)
    with pytest.raises(CheckpointError, match=r"noise.ckpt: not a torch checkpoint") as info:
        read_weights_file(noise)
    assert "pickled" not in str(info.value)


def test_an_edited_checkpoint_names_itself_in_the_error(trained_checkpoint, tmp_path: Path) -> None:
    import copy

    from zoo.engine.run import load_module

    saved = torch.load(trained_checkpoint, weights_only=True)
    renamed = copy.deepcopy(saved)
    renamed["zoo"]["recipe"]["model"]["backbone"]["name"] = "lenet55"
    torch.save(renamed, tmp_path / "renamed.ckpt")
    with pytest.raises(ZooError, match="lenet55") as info:
        load_module(tmp_path / "renamed.ckpt")
    assert "renamed.ckpt" in " ".join(getattr(info.value, "__notes__", []))
    wider = copy.deepcopy(saved)
    wider["zoo"]["recipe"]["model"]["head"]["hidden"] = [32]
    torch.save(wider, tmp_path / "wider.ckpt")
    with pytest.raises(CheckpointError, match=r"wider.ckpt: its weights do not fit .*size mismatch"):
        load_module(tmp_path / "wider.ckpt")
