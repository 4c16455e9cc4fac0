"""The options users of BasicSR and piq bring along: every VGG (BatchNorm ones included, with
BasicSR's layer names), ``pooling``, ``pool_stride`` and ``normalize=False``.

Each option is checked against the formula written out here, on torchvision's own layers with the
same random weights: no peer package needed.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from perceptual_loss import (
    TAPS,
    CombinedLoss,
    DISTSLoss,
    FeatureExtractor,
    LPIPSLoss,
    PerceptualLoss,
    StyleLoss,
    lpips_distance,
    normalize_channels,
)
from perceptual_loss.backbones import FrozenBatchNorm, L2Pool2d

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def random_features(backbone: str, seed: int = 0) -> nn.Sequential:
    """torchvision's ``features`` with random weights and, for BatchNorm, random running statistics."""
    torch.manual_seed(seed)
    features = getattr(models, backbone)(weights=None).features.eval()
    for module in features.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return features


def saved(features: nn.Sequential, tmp_path: Path, name: str) -> Path:
    """The features' state dict as a file (a file with only ``features`` weights is accepted)."""
    path = tmp_path / f"{name}.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def reference(
    features: nn.Sequential,
    x: torch.Tensor,
    indices: dict[str, int],
    pool: str = "max",
    stride: int | None = None,
    normalized: bool = True,
) -> dict[str, torch.Tensor]:
    """The formula: run torchvision's layers one by one, each max-pool replaced as ``pool`` says."""
    x = (x - MEAN) / STD if normalized else x
    out = {}
    for index, layer in enumerate(features):
        if isinstance(layer, nn.MaxPool2d):
            kernel, step = layer.kernel_size, layer.stride if stride is None else stride
            if pool == "max":
                x = F.max_pool2d(x, kernel, step, ceil_mode=layer.ceil_mode)
            elif pool == "avg":
                x = F.avg_pool2d(x, kernel, step, ceil_mode=layer.ceil_mode)
            elif pool == "l2":  # DISTS: sqrt(hann3x3 * x^2 + 1e-12), padding 1
                hann = torch.tensor([0.5, 1.0, 0.5])
                window = (hann[:, None] * hann[None, :] / 4.0).expand(x.shape[1], 1, 3, 3)
                x = torch.sqrt(F.conv2d(x**2, window, stride=step or 2, padding=1, groups=x.shape[1]) + 1e-12)
            # pool == "none": the layer is skipped
        elif isinstance(layer, nn.ReLU):
            x = F.relu(x)  # out of place: the pre-activation stays as it was
        else:
            x = layer(x)
        for name, wanted in indices.items():
            if wanted == index:
                out[name] = x
    return out


def test_every_vgg_has_basicsr_names() -> None:
    """BasicSR's NAMES tables: conv, (bn,) relu per layer, a pool per block."""
    assert list(TAPS["vgg11"])[:4] == ["conv1_1", "relu1_1", "pool1", "conv2_1"]
    assert list(TAPS["vgg13_bn"])[:7] == ["conv1_1", "bn1_1", "relu1_1", "conv1_2", "bn1_2", "relu1_2", "pool1"]
    for name, last in [("vgg11", "pool5"), ("vgg13", "pool5"), ("vgg19_bn", "pool5"), ("vgg16_bn", "pool5")]:
        assert max(TAPS[name], key=TAPS[name].get) == last
    assert TAPS["vgg19_bn"]["conv5_4"] == 49 and TAPS["vgg19_bn"]["bn5_4"] == 50 and TAPS["vgg11"]["relu4_2"] == 14


@pytest.mark.parametrize(
    ("backbone", "taps"),
    [
        ("vgg11", ["conv1_1", "relu2_1", "conv4_2", "pool3"]),
        ("vgg13", ["relu1_2", "conv3_2"]),
        ("vgg11_bn", ["conv1_1", "bn1_1", "relu1_1", "bn3_2", "pool4"]),
        ("vgg16_bn", ["bn2_2", "relu3_3", "conv4_1"]),
    ],
)
def test_vgg_variants_equal_torchvision(backbone: str, taps: list[str], tmp_path: Path) -> None:
    """Features equal torchvision's eval-mode layers; conv and bn taps are pre-activation."""
    features = random_features(backbone)
    extractor = FeatureExtractor(backbone, taps, weights=saved(features, tmp_path, backbone))
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    expected = reference(features, x, {t: TAPS[backbone][t] for t in taps})
    ours = extractor(x)
    for tap in taps:
        torch.testing.assert_close(ours[tap], expected[tap], rtol=1e-5, atol=1e-5)
        if tap.startswith(("conv", "bn")):
            assert (ours[tap] < 0).any(), f"{tap} must be pre-activation"


def test_batchnorm_vgg_is_frozen_and_keeps_nothing_for_a_parent(tmp_path: Path) -> None:
    features = random_features("vgg11_bn")
    extractor = FeatureExtractor("vgg11_bn", ["bn2_1", "relu3_1"], weights=saved(features, tmp_path, "bn"))
    norms = [m for m in extractor.modules() if isinstance(m, FrozenBatchNorm)]
    assert len(norms) == 3 and not any(isinstance(m, nn.BatchNorm2d) for m in extractor.modules())
    statistics = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    x = torch.rand(4, 3, 32, 32)
    before = extractor(x)
    parent = nn.Sequential(extractor).train()
    after = parent[0](x * 1.0)
    for tap in before:
        assert torch.equal(before[tap], after[tap]), "train() must not switch BatchNorm to batch statistics"
    for m, (mean, var) in zip(norms, statistics, strict=True):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
    assert extractor.state_dict() == {} and not any(p.requires_grad for p in extractor.parameters())


def test_random_batchnorm_init_is_the_identity_statistics() -> None:
    extractor = FeatureExtractor("vgg13_bn", ["bn1_1"], weights=None)
    norm = next(m for m in extractor.modules() if isinstance(m, FrozenBatchNorm))
    assert torch.equal(norm.running_mean, torch.zeros(64)) and torch.equal(norm.running_var, torch.ones(64))


@pytest.mark.parametrize(
    ("backbone", "pooling", "stride", "taps"),
    [
        ("vgg19", "avg", None, ["relu2_1", "pool3", "relu5_4"]),
        ("vgg19", "max", 1, ["relu2_2", "relu3_1"]),
        ("vgg19", "avg", 1, ["pool1", "relu2_1"]),
        ("vgg19", "none", None, ["relu2_1", "conv3_1"]),
        ("vgg16", "l2", None, ["relu2_2", "relu4_3"]),
        ("vgg16", "l2", 1, ["relu2_2"]),
        ("vgg13_bn", "avg", None, ["bn3_1", "relu4_2"]),
        ("alexnet", "avg", None, ["relu2", "relu5"]),
        ("squeezenet1_1", "avg", None, ["fire3", "fire5"]),
    ],
)
def test_pooling_and_stride_follow_the_formula(
    backbone: str, pooling: str, stride: int | None, taps: list[str], tmp_path: Path
) -> None:
    features = random_features(backbone)
    extractor = FeatureExtractor(
        backbone, taps, weights=saved(features, tmp_path, backbone), pooling=pooling, pool_stride=stride
    )
    x = torch.rand(2, 3, 72, 72, generator=torch.Generator().manual_seed(2))
    expected = reference(features, x, {t: TAPS[backbone][t] for t in taps}, pooling, stride)
    ours = extractor(x)
    for tap in taps:
        assert ours[tap].shape == expected[tap].shape, tap
        torch.testing.assert_close(ours[tap], expected[tap], rtol=1e-5, atol=1e-5)
    # mask_mode="inside" erodes along the same pools: one mask value per feature position
    inside = extractor.inside_masks(torch.ones(1, 1, 72, 72), taps)
    for tap in taps:
        assert inside[tap].shape[-2:] == ours[tap].shape[-2:], tap


def test_pooling_changes_the_loss_and_the_gradient_flows() -> None:
    x = torch.rand(2, 3, 48, 48, requires_grad=True)
    y = torch.rand(2, 3, 48, 48)
    values = {}
    for pooling in ("max", "avg", "l2", "none"):
        loss = PerceptualLoss(["relu3_3"], weights=None, pooling=pooling)
        value = loss(x, y)
        (grad,) = torch.autograd.grad(value, x)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
        assert loss(y, y) == 0
        values[pooling] = value.item()
    assert len(set(values.values())) == 4


@pytest.mark.parametrize("stride", [1, 3])
def test_l2_pool_gradient_with_another_stride(stride: int) -> None:
    pool = L2Pool2d(stride=stride).double()
    x = torch.rand(1, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pool, (x,))
    assert pool(x).shape[-2:] == ((7 - 1) // stride + 1, (6 - 1) // stride + 1)


def test_normalize_false_feeds_the_network_unit_range_images(tmp_path: Path) -> None:
    """BasicSR's use_input_norm=False: no mean/std; range_norm (input in [-1, 1]) is input_range."""
    features = random_features("vgg19")
    weights = saved(features, tmp_path, "vgg19")
    x = torch.rand(2, 3, 32, 32)
    raw = reference(features, x, {"relu2_1": TAPS["vgg19"]["relu2_1"]}, normalized=False)["relu2_1"]
    plain = FeatureExtractor("vgg19", ["relu2_1"], weights=weights, normalize=False)
    torch.testing.assert_close(plain(x)["relu2_1"], raw, rtol=1e-5, atol=1e-5)
    signed = FeatureExtractor("vgg19", ["relu2_1"], weights=weights, normalize=False, input_range=(-1, 1))
    torch.testing.assert_close(signed(x * 2 - 1)["relu2_1"], raw, rtol=1e-5, atol=1e-5)
    zero_one = PerceptualLoss(["relu2_1"], backbone="vgg19", weights=weights, mean=(0, 0, 0), std=(1, 1, 1))
    off = PerceptualLoss(["relu2_1"], backbone="vgg19", weights=weights, normalize=False)
    y = torch.rand(2, 3, 32, 32)
    assert torch.equal(zero_one(x, y), off(x, y))
    assert off(x, y) != PerceptualLoss(["relu2_1"], backbone="vgg19", weights=weights)(x, y)


def test_every_loss_takes_the_input_normalisation() -> None:
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    for make in (
        lambda **kw: PerceptualLoss(weights=None, **kw),
        lambda **kw: StyleLoss(weights=None, **kw),
        lambda **kw: LPIPSLoss(net="squeeze", weights=None, **kw),
        lambda **kw: DISTSLoss(weights=None, **kw),
    ):
        default, off = make(), make(normalize=False)
        assert off.extractor.mean == (0.0, 0.0, 0.0) and off.extractor.std == (1.0, 1.0, 1.0)
        assert default.extractor.mean != off.extractor.mean
        assert default(x, y) != off(x, y)
        custom = make(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        assert custom.extractor.mean == (0.5, 0.5, 0.5)
        with pytest.raises(ValueError, match="normalize=False.*give one or the other"):
            make(normalize=False, mean=(0.5, 0.5, 0.5))


def test_lpips_with_average_pooling_is_piqs_replace_pooling(tmp_path: Path) -> None:
    """piq.LPIPS(replace_pooling=True): LPIPS-vgg on a VGG16 whose max-pools average; the formula."""
    features = random_features("vgg16")
    weights = saved(features, tmp_path, "vgg16")
    loss = LPIPSLoss(net="vgg", weights=weights, pooling="avg", reduction="none")
    x, y = torch.rand(2, 3, 48, 48), torch.rand(2, 3, 48, 48)
    taps = {t: TAPS["vgg16"][t] for t in ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")}
    fx, fy = reference(features, x, taps, "avg"), reference(features, y, taps, "avg")
    heads = dict(zip(taps, loss.comparison.heads.weights, strict=True))
    expected = sum(
        (heads[t] * (normalize_channels(fx[t]) - normalize_channels(fy[t])) ** 2).sum(1).mean((1, 2)) for t in taps
    )
    torch.testing.assert_close(loss(x, y), expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(
        lpips_distance(fx, {t: normalize_channels(fy[t]) for t in taps}, heads), expected, rtol=1e-5, atol=1e-7
    )
    assert not torch.allclose(loss(x, y), LPIPSLoss(net="vgg", weights=weights, reduction="none")(x, y))


def test_criterion_shares_a_pass_only_between_equal_poolings() -> None:
    both = {"weight": 1.0, "layers": ["relu2_2"]}
    shared = CombinedLoss(perceptual=both, style={**both, "pooling": "max"})  # the hub cache's random "imagenet"
    apart = CombinedLoss(perceptual={**both, "pooling": "avg"}, style=both)
    assert len(shared.extractors) == 1 and len(apart.extractors) == 2
    pred, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    alone = PerceptualLoss(["relu2_2"], pooling="avg")
    torch.testing.assert_close(apart(pred, target).parts["perceptual"], alone(pred, target))
    strided = CombinedLoss(perceptual={**both, "pool_stride": 1, "normalize": False}, weights=None)
    extractor = next(iter(strided.extractors.values()))
    assert extractor.pool_stride == 1 and extractor.std == (1.0, 1.0, 1.0)


def test_a_users_module_is_not_changed_by_the_options() -> None:
    module = models.vgg11(weights=None).features
    snapshot = copy.deepcopy(module.state_dict())
    with pytest.raises(ValueError, match="pooling= and pool_stride= change the max-pools of the classic trunks"):
        FeatureExtractor(module, ["4"], weights=None, pooling="avg")
    assert all(torch.equal(v, snapshot[k]) for k, v in module.state_dict().items())
    assert isinstance(module[2], nn.MaxPool2d)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pooling": "mean"}, r"Unknown pooling 'mean'; choose one of \('max', 'avg', 'l2', 'none'\)"),
        ({"backbone": "alexnet", "layers": ["relu2"], "pooling": "l2"}, "alexnet's pools are 3x3"),
        ({"layers": ["bn2_2"]}, "bn2_2 is a BatchNorm layer of vgg16_bn; vgg16 has none. Use backbone='vgg16_bn'"),
        ({"backbone": "vgg19", "layers": ["bn5_4"]}, "Use backbone='vgg19_bn'"),
        ({"layers": ["pool2"], "pooling": "none"}, "no pool2 to tap"),
        ({"pooling": "none", "pool_stride": 2}, "pool_stride with pooling='none'"),
        ({"pool_stride": 0}, "pool_stride must be a positive int"),
        ({"backbone": "resnet18", "layers": ["layer1"], "pooling": "avg"}, "resnet18 with taps"),
        ({"distance": "l3"}, r"Unknown distance 'l3'.*choose one of \('l1', 'l2'"),
    ],
)
def test_bad_options_name_the_problem_and_the_fix(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PerceptualLoss(**{"layers": ["relu2_2"], "weights": None, **kwargs})


def test_presets_are_the_recipes_written_out() -> None:
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    recipes = {
        "esrgan": PerceptualLoss({"conv5_4": 1.0}, backbone="vgg19", distance="l1"),
        "real_esrgan": PerceptualLoss(
            {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}, backbone="vgg19"
        ),
    }
    for name, written in recipes.items():
        preset = PerceptualLoss.from_preset(name)
        assert preset.comparison.layer_weights == written.comparison.layer_weights
        assert torch.equal(preset(x, y), written(x, y))
        criterion = CombinedLoss(perceptual={"preset": name, "weight": 2.0})
        total, parts = criterion(x, y)
        assert torch.equal(parts["perceptual"], written(x, y)) and torch.equal(total, 2.0 * written(x, y))
    overridden = PerceptualLoss.from_preset("esrgan", distance="l2", reduction="none")
    assert overridden.comparison.distance == "l2" and overridden(x, y).shape == (2,)
    with pytest.raises(ValueError, match=r"Unknown preset 'srgan'; choose one of \('esrgan', 'real_esrgan'\)"):
        PerceptualLoss.from_preset("srgan")
    with pytest.raises(ValueError, match="preset= is for the perceptual term"):
        CombinedLoss(style={"preset": "esrgan", "weight": 1.0})
