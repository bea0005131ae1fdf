"""``zoo summary``: the lecture's numbers through zoo.summary, the table's bookkeeping, and the CLI's JSON."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn

from zoo.cli import main
from zoo.errors import ZooError
from zoo.summary import parse_input, summarize, summarize_module


def row(summary, name):
    return next(r for r in summary.layers if r.name == name)


@pytest.fixture(scope="module")
def alexnet():
    return summarize("alexnet")


@pytest.fixture(scope="module")
def vgg16():
    return summarize("vgg16_d")


def test_alexnet_conv1_and_pool1(alexnet):
    assert alexnet.input == (3, 227, 227)
    conv1, pool1 = row(alexnet, "backbone.layers.conv1"), row(alexnet, "backbone.layers.pool1")
    assert (conv1.output_shape, conv1.params) == ([96, 55, 55], 34_944)
    assert conv1.flops == 2 * 96 * 55 * 55 * (11 * 11 * 3)  # one multiply-add per weight per output cell
    assert conv1.activation_bytes == 96 * 55 * 55 * 4
    assert pool1.output_shape == [96, 27, 27]
    assert alexnet.total_params == 60_965_224


def test_vgg16_parameters_and_multiply_adds(vgg16):
    assert vgg16.total_params == 138_357_544
    assert vgg16.total_macs == pytest.approx(15.5e9, rel=0.01)  # the lecture's "about 15.5 G"
    assert row(vgg16, "head.layers.fc8").output_shape == [1000]


def test_googlenet_and_resnet50_agree_with_torchvision(alexnet):
    small = (3, 64, 64)  # parameter counts do not depend on the input; a small one is faster
    with torch.device("meta"):
        reference = torchvision.models.googlenet(aux_logits=False, init_weights=True)
        resnet50 = torchvision.models.resnet50()
    assert summarize("googlenet_bn", input_shape=small).total_params == sum(p.numel() for p in reference.parameters())
    assert summarize("resnet50_v1", input_shape=small).total_params == sum(p.numel() for p in resnet50.parameters())
    assert 8 < alexnet.total_params / summarize("googlenet", input_shape=small).total_params < 13


def test_rows_add_up_to_the_totals(vgg16):
    assert sum(r.params for r in vgg16.layers) == vgg16.total_params
    assert sum(r.flops for r in vgg16.layers) == vgg16.total_flops
    assert vgg16.training_bytes_per_image == 2 * vgg16.total_activation_bytes
    relu = row(vgg16, "backbone.layers.relu1_1")
    assert relu.activation_bytes == 0  # in place: no new memory


def test_rows_follow_execution_order_and_shared_modules_count_once():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.scale = nn.Parameter(torch.ones(1))  # owned by the container: it gets a row too

        def forward(self, x):
            return self.conv(self.conv(x)) * self.scale

    summary = summarize_module(Twice(), (3, 8, 8))
    assert [r.name for r in summary.layers] == ["conv", "conv", ""]
    assert [r.params for r in summary.layers] == [84, 0, 1] and summary.total_params == 85
    assert [r.flops for r in summary.layers] == [2 * 64 * 3 * 27] * 2 + [0]
    assert [r.activation_bytes for r in summary.layers] == [3 * 64 * 4] * 3  # the product is new memory


def test_containers_report_what_their_own_code_allocates():
    summary = summarize("googlenet_bn", input_shape=(3, 64, 64))
    concat = row(summary, "backbone.inception3a")  # torch.cat of the four branches
    assert (concat.type, concat.output_shape, concat.params) == ("Inception", [256, 8, 8], 0)
    assert concat.activation_bytes == 256 * 8 * 8 * 4
    residual = summarize("preact_resnet20")
    assert row(residual, "backbone.stage1.0").activation_bytes == 16 * 32 * 32 * 4  # the sum x + F(x)
    assert row(residual, "backbone.stage1.1.shortcut").activation_bytes == 0


def test_backbone_only_and_num_classes():
    assert summarize("vgg16_d", backbone_only=True).total_params == 14_714_688
    ten = summarize("resnet20")
    assert ten.name == "resnet20 + paper classifier (10 classes)" and ten.total_params == 269_722
    assert summarize("resnet20", num_classes=100).total_params == 269_722 + 90 * 65
    assert summarize("lenet5").name == "lenet5 (backbone)"  # no paper classifier in that family
    with pytest.raises(ZooError, match="contradicts"):
        summarize("resnet20", num_classes=10, backbone_only=True)


def test_other_input_sizes_and_bad_inputs():
    assert parse_input("3x64x64") == (3, 64, 64)
    summary = summarize("resnet20", input_shape=(1, 64, 64))
    assert row(summary, "backbone.stage3.2.relu").output_shape == [64, 16, 16]
    with pytest.raises(ZooError, match="CxHxW"):
        parse_input("224")
    with pytest.raises(ZooError, match="cannot run on a 3x32x32 input"):
        summarize("alexnet", input_shape=(3, 32, 32))


def test_cli_json_format(tmp_path, capsys):
    out = tmp_path / "alexnet.json"
    assert main(["summary", "alexnet", "--input", "3x227x227", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "backbone.layers.conv1" in table and "60,965,224" in table
    data = json.loads(out.read_text())
    assert {"layers", "total_params", "total_flops", "total_macs", "total_activation_bytes",
            "training_bytes_per_image", "training_state_bytes", "input"} <= set(data)
    assert data["input"] == [3, 227, 227] and data["total_params"] == 60_965_224
    assert all(set(r) == {"name", "type", "output_shape", "params", "activation_bytes", "flops"}
               for r in data["layers"])
    conv1 = data["layers"][0]
    assert conv1 == {"name": "backbone.layers.conv1", "type": "Conv2d", "output_shape": [96, 55, 55],
                     "params": 34_944, "activation_bytes": 96 * 55 * 55 * 4, "flops": 2 * 96 * 55 * 55 * 363}
    assert data["total_activation_bytes"] == sum(r["activation_bytes"] for r in data["layers"])


def test_cli_library_backbone_and_errors(capsys):
    assert main(["summary", "resnet18"]) == 0  # timm's: summarised as a feature extractor
    assert "resnet18 (backbone), input 3x224x224" in capsys.readouterr().out
    assert main(["summary", "resnt20"]) == 2
    assert "did you mean 'resnet20'" in capsys.readouterr().err
    assert main(["summary", "resnet18", "--num-classes", "10"]) == 2
    assert "only zoo families" in capsys.readouterr().err


def test_cli_checkpoint(trained_checkpoint, tmp_path, capsys):
    from zoo.engine import load_module

    out = tmp_path / "ckpt.json"
    assert main(["summary", str(trained_checkpoint), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    model = load_module(trained_checkpoint).model
    assert data["total_params"] == sum(p.numel() for p in model.parameters())
    assert data["input"] == [1, 32, 32]  # the recipe's channels and image size
    assert data["layers"][0]["name"].startswith("backbone.")
    assert data["layers"][-1]["name"].startswith("head.")
