"""The case-study architectures (issue 6): the papers' numbers, torchvision's counts, and what makes each special.

tests/test_backbones.py runs every registered backbone through the generic contract; here every case-study
backbone also runs at its design input, and the rest checks what the papers say.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

from zoo.backbones import create_backbone, default_input
from zoo.backbones.own import OWN_BACKBONES
from zoo.backbones.paper_classifier import paper_classifier
from zoo.backbones.resnet_classic import ResidualUnit, wide_resnet

CASE_STUDIES = [n for n in OWN_BACKBONES if not n.startswith("lenet")]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_params(build, *args, **kwargs) -> int:
    """Parameters of ``build(...)`` built on the meta device: counted without allocating or initialising them."""
    with torch.device("meta"):
        return n_params(build(*args, **kwargs))


def test_there_are_case_studies():
    assert {"alexnet", "zfnet", "vgg16_d", "googlenet", "resnet50_v1", "resnet20", "plain56", "resnet110_sd",
            "wrn_28_10", "allconv_c"} <= set(CASE_STUDIES)


def test_no_zoo_name_is_a_timm_name():
    # Bare names resolve to the zoo first; a clash would silently replace timm's model of that name.
    assert set(OWN_BACKBONES) & set(timm.list_models()) == set()


@pytest.mark.parametrize("name", CASE_STUDIES)
def test_design_input_and_feature_contract(name):
    """Native input: channels as declared. Then, small for speed: exact increments, and a gradient everywhere."""
    c, h, w = default_input(name)
    backbone = create_backbone(name).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, c, h, w))
    assert [f.shape[1] for f in feats] == [i.channels for i in backbone.feature_info]
    s = max(i.stride for i in backbone.feature_info)
    # Strides are exact increments, so this is the smallest input that leaves two cells in the deepest map.
    small = h - (feats[-1].shape[-1] - 2) * s
    with torch.no_grad():
        base = backbone(torch.randn(1, c, small, small))
        grown = backbone(torch.randn(1, c, small + 2 * s, small + 3 * s))
    for info, a, b in zip(backbone.feature_info, base, grown):
        assert (b.shape[-2] - a.shape[-2], b.shape[-1] - a.shape[-1]) == (2 * s // info.stride, 3 * s // info.stride)
    backbone.train()
    torch.manual_seed(0)
    sum(f.mean() for f in backbone(torch.randn(2, c, small, small))).backward()
    assert [n for n, p in backbone.named_parameters() if p.grad is None] == []


# ---- AlexNet, ZFNet, VGG, GoogLeNet: the published sizes and counts


def test_alexnet_layer_sizes_and_parameters():
    model = paper_classifier("alexnet_single_tower").eval()
    layers = model.backbone.layers
    x = torch.randn(1, 3, 227, 227)
    with torch.no_grad():
        conv1 = layers.relu1(layers.conv1(x))
        pool1 = layers.pool1(layers.norm1(conv1))
    assert conv1.shape[1:] == (96, 55, 55)
    assert n_params(layers.conv1) == 34_944 and layers.conv1.kernel_size == (11, 11) and layers.conv1.stride == (4, 4)
    assert pool1.shape[1:] == (96, 27, 27)
    assert n_params(model) == 62_378_344
    assert meta_params(paper_classifier, "alexnet") == 60_965_224  # the paper's two-GPU grouping, its "60 million"
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.5 for m in model.head.modules()) == 2


def test_zfnet_first_layer():
    model = create_backbone("zfnet").eval()
    conv1 = model.body.layers.conv1
    assert (conv1.out_channels, conv1.kernel_size, conv1.stride) == (96, (7, 7), (2, 2))
    with torch.no_grad():
        shapes = [tuple(f.shape[1:]) for f in model(torch.randn(1, 3, 224, 224))]
    assert shapes == [(96, 55, 55), (256, 13, 13), (256, 6, 6)]  # the paper's Fig. 3


def test_vgg16_matches_torchvision_and_uses_only_3x3_convs():
    with torch.device("meta"):
        model = paper_classifier("vgg16_d")
    assert n_params(model) == meta_params(torchvision.models.vgg16) == 138_357_544
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding == (1, 1)
                                    for c in convs)
    assert all(p.kernel_size == 2 and p.stride == 2 for p in model.modules() if isinstance(p, nn.MaxPool2d))


@pytest.mark.parametrize("name, tv", [("vgg11_a", "vgg11"), ("vgg13_b", "vgg13"), ("vgg19_e", "vgg19")])
def test_vgg_configurations_match_torchvision(name, tv):
    assert meta_params(paper_classifier, name) == meta_params(getattr(torchvision.models, tv))


def test_googlenet_bn_is_torchvision_googlenet():
    reference = torchvision.models.googlenet(aux_logits=False, init_weights=True).eval()
    model = paper_classifier("googlenet_bn").eval()
    assert n_params(model) == n_params(reference) == 6_624_904
    # Same structure, not only the same count: torchvision's weights load and give the same logits.
    state = {("head." if k.startswith("fc.") else "backbone.") + k: v for k, v in reference.state_dict().items()}
    model.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_googlenet_has_far_fewer_parameters_than_alexnet():
    paper = paper_classifier("googlenet")
    assert n_params(paper) == 6_998_552
    assert not any(isinstance(m, nn.BatchNorm2d) for m in paper.modules())
    assert sum(isinstance(m, nn.Linear) for m in paper.modules()) == 1  # no large FC layers
    ratio = meta_params(paper_classifier, "alexnet") / n_params(paper)
    assert 8 < ratio < 13  # measured 8.7x; the paper says "12 times fewer" (see docs/architectures.md)


# ---- ResNets: counts, plain counterparts, pre-activation, stochastic depth, width


@pytest.mark.parametrize("name, tv", [("resnet18_v1", "resnet18"), ("resnet34_v1", "resnet34"),
                                      ("resnet50_v1", "resnet50")])
def test_imagenet_resnets_match_torchvision(name, tv):
    assert meta_params(paper_classifier, name) == meta_params(getattr(torchvision.models, tv))


def test_resnet50_downsamples_in_the_first_1x1_as_in_the_paper():
    unit = create_backbone("resnet50_v1").body.stage2[0]
    assert unit.branch.conv1.kernel_size == (1, 1) and unit.branch.conv1.stride == (2, 2)
    assert unit.branch.conv2.stride == (1, 1)


@pytest.mark.parametrize("depth", [20, 32, 56, 110])
def test_cifar_depths_count_their_weight_layers(depth):
    for form in (f"resnet{depth}", f"preact_resnet{depth}", f"plain{depth}"):
        model = paper_classifier(form)
        layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(layers) == depth, form  # option A shortcuts have no weights
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert n_params(paper_classifier(f"resnet{depth}")) == {20: 269_722, 32: 464_154, 56: 853_018,
                                                             110: 1_727_962}[depth]  # the paper's 0.27 M ... 1.7 M


def test_plain_net_is_the_resnet_without_shortcuts():
    torch.manual_seed(0)
    resnet, plain = create_backbone("resnet20").eval(), create_backbone("plain20").eval()
    plain.load_state_dict(resnet.state_dict(), strict=True)  # same layers, same weights
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(resnet(x)[-1], plain(x)[-1])
    assert not any(u.shortcut is not None for u in plain.modules() if isinstance(u, ResidualUnit))


@pytest.mark.parametrize("preact", [False, True])
def test_silencing_the_branch_leaves_the_identity_or_nothing(preact):
    x = torch.rand(2, 16, 8, 8)  # non-negative, so the post-activation ReLU keeps it
    for skip in (True, False):
        unit = ResidualUnit(16, 16, preact=preact, skip=skip).eval()
        last = unit.branch[-1]
        nn.init.zeros_(last.weight)
        if isinstance(last, nn.BatchNorm2d):
            nn.init.zeros_(last.bias)
        with torch.no_grad():
            torch.testing.assert_close(unit(x), x if skip else torch.zeros_like(x))


def test_preact_units_normalise_before_convolving():
    unit = create_backbone("preact_resnet20").body.stage1[0]
    assert isinstance(unit.pre_act[0], nn.BatchNorm2d) and unit.relu is None
    assert isinstance(list(unit.branch.children())[0], nn.Conv2d)
    assert isinstance(create_backbone("preact_resnet20").body.final_act[0], nn.BatchNorm2d)


def test_stochastic_depth_drops_in_training_and_scales_in_evaluation():
    model = create_backbone("resnet110_sd").body
    units = [m for m in model.modules() if isinstance(m, ResidualUnit)]
    assert len(units) == 54 and units[-1].survival == pytest.approx(0.5)
    assert units[0].survival == pytest.approx(1 - 0.5 / 54)  # linear decay: p_l = 1 - l / L (1 - p_L)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    runs = []
    for seed in (0, 1, 0):
        torch.manual_seed(seed)
        runs.append(model(x)[-1].detach())
    assert not torch.allclose(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x)[-1], model(x)[-1])
    unit = units[-1]
    y = torch.randn(2, 64, 8, 8)
    with torch.no_grad():  # the expected value of the training-time sum
        torch.testing.assert_close(unit(y), torch.relu(y + 0.5 * unit.branch(y)))


def test_wide_resnet_width_multiplier_multiplies_channels():
    narrow, wide = wide_resnet(depth=16, widen_factor=1), wide_resnet(depth=16, widen_factor=4)
    assert [i.channels for i in narrow.feature_info] == [16, 16, 32, 64]
    assert [i.channels for i in wide.feature_info] == [16, 64, 128, 256]
    assert [i.channels for i in create_backbone("wrn_16_4").feature_info] == [16, 64, 128, 256]
    assert meta_params(paper_classifier, "wrn_28_10") == 36_479_194  # the paper's 36.5 M
    with pytest.raises(ValueError, match="6n\\+4"):
        wide_resnet(depth=15, widen_factor=2)


# ---- The all-convolutional net


def test_allconv_has_no_pooling_and_the_papers_size():
    model = paper_classifier("allconv_c")
    pools = (nn.MaxPool2d, nn.AvgPool2d)
    assert not any(isinstance(m, pools) for m in model.modules())
    strided = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 2
    assert n_params(model) == 1_369_738  # the paper's 1.4 M
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)
