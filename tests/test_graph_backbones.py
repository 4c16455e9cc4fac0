"""Any torchvision classifier, or a user's module, tapped by node name through torch.fx.

Weights are random, written under torchvision's own file names into the temporary hub cache and
loaded through the weights API path: the tests prove the mechanics (the right tensors, exactly),
never perceptual quality.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import models
from torchvision.models.feature_extraction import get_graph_node_names

from perceptual_loss import (
    CombinedLoss,
    FeatureExtractor,
    MissingWeightsError,
    PerceptualLoss,
    StyleLoss,
    available_taps,
    list_backbones,
)
from perceptual_loss.backbones import FrozenBatchNorm, MaxPool2dRecomputingIndices, default_normalization

from .helpers import module_snapshot, saved_tensors

HOOK_CASES = {
    # bn1 and layer2.1.bn2 are followed by an in-place ReLU: they must stay pre-activation.
    "resnet50": (["bn1", "layer1", "layer2.1.bn2", "layer3", "logits"], 64),
    "convnext_tiny": (["features.0", "features.1.0.block", "features.3", "features.5.2", "logits"], 64),
    "efficientnet_b0": (["features.1", "features.3.0.block.1", "features.4", "logits"], 64),
    # ':tokens': the raw (N, L, D) tokens; without it a token tap is the patch map (tested below)
    "vit_b_16": (["conv_proj", "encoder.layers.encoder_layer_1:tokens", "encoder.ln:tokens", "logits"], 224),
}


def _reference(name: str, weights_file: Path) -> nn.Module:
    """The plain torchvision model with the same file, in eval mode and the extractor's CPU layout."""
    model = models.get_model(name, weights=None)
    model.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
    return model.eval().requires_grad_(False).to(memory_format=torch.channels_last)


def _hooked(model: nn.Module, taps: list[str], x: Tensor) -> dict[str, Tensor]:
    """What forward hooks on the named modules capture (cloned: later in-place ops cannot touch it)."""
    captured: dict[str, Tensor] = {}
    modules = dict(model.named_modules())
    hooks = [
        modules[tap.split(":")[0]].register_forward_hook(lambda m, i, o, tap=tap: captured.__setitem__(tap, o.clone()))
        for tap in taps
        if tap != "logits"
    ]
    captured["logits"] = model(x)
    for hook in hooks:
        hook.remove()
    return captured


@pytest.mark.parametrize("name", sorted(HOOK_CASES))
def test_every_tap_equals_a_forward_hook_on_torchvision_bit_for_bit(name: str, torchvision_weights) -> None:
    taps, size = HOOK_CASES[name]
    path = torchvision_weights(name)
    extractor = FeatureExtractor(name, taps)  # weights="imagenet": through the hub cache
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    ours = extractor(x)
    normalized = extractor.normalize(x)
    expected = _hooked(_reference(name, path), taps, normalized)
    assert list(ours) == taps
    for tap in taps:
        assert torch.equal(ours[tap], expected[tap]), tap
    if name == "resnet50":
        assert (ours["bn1"] < 0).any() and (ours["layer2.1.bn2"] < 0).any(), "pre-activation taps"


def test_vit_token_taps_are_patch_maps_or_class_tokens(torchvision_weights) -> None:
    path = torchvision_weights("vit_b_16")
    tap = "encoder.layers.encoder_layer_1"
    extractor = FeatureExtractor("vit_b_16", [tap, f"{tap}:cls", f"{tap}:tokens"])
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    ours = extractor(x)
    tokens = _hooked(_reference("vit_b_16", path), [tap], extractor.normalize(x))[tap]
    assert torch.equal(ours[f"{tap}:tokens"], tokens)
    assert torch.equal(ours[f"{tap}:cls"], tokens[:, 0])
    # 197 tokens = the class token + 14 x 14 patches of 16 pixels, row by row
    assert torch.equal(ours[tap], tokens[:, 1:].reshape(2, 14, 14, 768).permute(0, 3, 1, 2))
    assert ours[tap]._is_view() and ours[tap].stride(1) == 1, "a view of the tokens (channels last), no copy"
    assert extractor.token_layouts[tap].prefix == 1 and extractor.token_layouts[tap].patch == 16
    assert extractor.tap_dims == {tap: 4, f"{tap}:cls": 2, f"{tap}:tokens": 3}


def test_normalisation_is_the_weights_own() -> None:
    extractor = FeatureExtractor("resnet18", ["conv1"], weights=None, input_range=(-1, 1))
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    torch.testing.assert_close(extractor.normalize(x), ((x + 1) / 2 - mean) / std, rtol=1e-6, atol=1e-6)
    features_mean, features_std = default_normalization("vgg16", "IMAGENET1K_FEATURES")
    assert features_std == pytest.approx((1 / 255,) * 3) and features_mean == pytest.approx((0.48235, 0.45882, 0.40784))


def _relu_inputs(model: nn.Module, module: str) -> list[Tensor]:
    """Inputs of every call of ``module`` (cloned before an in-place ReLU overwrites them)."""
    calls: list[Tensor] = []
    model.get_submodule(module).register_forward_pre_hook(lambda m, args: calls.append(args[0].clone()))
    return calls


def test_pre_activation_add_tap_is_unchanged_by_a_later_tap(torchvision_weights) -> None:
    """ResNet's ``layer1.0.add`` feeds the block's in-place ReLU: still pre-activation, alone or not."""
    path = torchvision_weights("resnet50")
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    alone = FeatureExtractor("resnet50", ["layer1.0.add"])(x)["layer1.0.add"]
    both = FeatureExtractor("resnet50", ["layer1.0.add", "layer2"])
    with_later = both(x)
    reference = _reference("resnet50", path)
    calls = _relu_inputs(reference, "layer1.0.relu")  # relu, relu_1, then relu_2 after the add
    reference(both.normalize(x))
    assert torch.equal(alone, with_later["layer1.0.add"])
    assert torch.equal(with_later["layer1.0.add"], calls[2])
    assert (alone < 0).any(), "an in-place ReLU did not overwrite it"


def test_truncated_extractor_keeps_a_fraction_of_the_parameters() -> None:
    extractor = FeatureExtractor("resnet50", ["layer2"])
    with torch.device("meta"):
        total = sum(p.numel() for p in models.resnet50().parameters())
    kept = sum(p.numel() for p in extractor.parameters())
    assert kept < 0.10 * total
    names = {name.split(".")[0] for name, _ in extractor.layers.named_parameters()}
    assert names == {"conv1", "bn1", "layer1", "layer2"}, "nothing after layer2: no layer3, layer4, fc"


def test_logits_tap_keeps_the_classifier_and_equals_the_model(torchvision_weights) -> None:
    path = torchvision_weights("resnet18")
    extractor = FeatureExtractor("resnet18", ["layer1", "logits"])
    assert "fc" in dict(extractor.layers.named_children())
    assert "fc" not in dict(FeatureExtractor("resnet18", ["layer4"]).layers.named_children())
    x = torch.rand(2, 3, 40, 40)
    expected = _reference("resnet18", path)(extractor.normalize(x))
    assert torch.equal(extractor(x)["logits"], expected)


def test_classic_backbones_take_node_names_and_logits(torchvision_weights) -> None:
    x = torch.rand(1, 3, 32, 32)
    by_alias = FeatureExtractor("vgg16", ["relu2_2"])(x)["relu2_2"]
    by_node = FeatureExtractor("vgg16", ["features.8"])(x)["features.8"]
    assert torch.equal(by_alias, by_node)
    traced = FeatureExtractor("vgg16", ["relu2_2", "conv3_1", "logits"])  # logits: the traced path
    out = traced(x)
    torch.testing.assert_close(out["relu2_2"], by_alias, rtol=1e-6, atol=1e-6)
    assert (out["conv3_1"] < 0).any(), "conv taps stay pre-activation on the traced path too"
    assert out["logits"].shape == (1, 1000)


def test_available_taps_are_torchvision_node_names_and_logits() -> None:
    with torch.device("meta"):
        _, eval_nodes = get_graph_node_names(models.resnet18())
    assert available_taps("resnet18") == [*eval_nodes[1:], "logits"]  # all but the input 'x'
    assert available_taps("vgg16")[:2] == ["conv1_1", "relu1_1"] and "features.15" in available_taps("vgg16")
    assert {"resnet50", "convnext_small", "efficientnet_b0", "vit_b_16", "swin_t", "regnet_y_400mf"} <= set(
        list_backbones()
    )


@pytest.mark.parametrize(
    ("name", "tap"),
    [("regnet_y_400mf", "trunk_output.block2"), ("densenet121", "features.denseblock1"),
     ("mobilenet_v3_large", "features.6"), ("swin_t", "features.3")],
)  # fmt: skip
def test_more_architectures_build_and_run(name: str, tap: str) -> None:
    loss = PerceptualLoss([tap], backbone=name, weights=None)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    value = loss(x, torch.rand(2, 3, 64, 64))
    value.backward()
    assert value > 0 and x.grad is not None and torch.isfinite(x.grad).all()
    assert not [m for m in loss.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)], "BatchNorm is frozen"


def test_batchnorm_and_dropout_stay_in_eval_mode_inside_a_training_parent() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Conv2d(3, 3, 1)
            self.loss = PerceptualLoss(["layer1", "logits"], backbone="resnet18", weights=None)

    model = Model().eval()
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        in_eval = model.loss(model.body(x), y)
    model.train()
    # ResNet's graph holds only modules that ignore the flag (BatchNorm is frozen), so the flag
    # follows the parent and Lightning has nothing to warn about; the values do not change.
    assert all(m.training for m in model.loss.extractor.modules())
    before = {k: v.clone() for k, v in model.loss.extractor.named_parameters()}
    first, second = model.loss(model.body(x), y), model.loss(model.body(x), y)
    assert torch.equal(first, second) and torch.equal(first.detach(), in_eval)
    assert all(torch.equal(v, before[k]) for k, v in model.loss.extractor.named_parameters()), "statistics unchanged"
    assert list(model.state_dict()) == ["body.weight", "body.bias"]
    assert list(model.loss.extractor.buffers()) == [], (
        "frozen statistics are parameters: DDP does not re-broadcast them"
    )
    pools = [m for m in model.loss.modules() if isinstance(m, nn.MaxPool2d)]
    assert pools and all(isinstance(m, MaxPool2dRecomputingIndices) for m in pools)
    assert [m for m in model.loss.modules() if isinstance(m, FrozenBatchNorm)]


@pytest.mark.parametrize(
    ("backbone", "tap", "pinned"),
    [
        ("efficientnet_b0", "features.3", {"StochasticDepth"}),
        ("convnext_tiny", "features.3", {"StochasticDepth"}),
        (
            "vit_b_16",
            "encoder.layers.encoder_layer_1",
            {"Dropout", "MultiheadAttention", "NonDynamicallyQuantizableLinear"},
        ),
    ],
)
def test_modules_that_may_read_the_mode_stay_in_eval_mode(backbone: str, tap: str, pinned: set[str]) -> None:
    """Dropout, stochastic depth and attention keep eval behaviour inside a training parent."""
    loss = PerceptualLoss([tap], backbone=backbone, weights=None, resize=224 if backbone == "vit_b_16" else None)
    x, y = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        in_eval = loss(x, y)
    nn.Sequential(nn.Conv2d(3, 3, 1), loss).train()
    assert {type(m).__name__ for m in loss.modules() if not m.training} == pinned
    with torch.no_grad():
        assert torch.equal(loss(x, y), in_eval) and torch.equal(loss(x, y), in_eval)


def test_two_terms_on_one_backbone_run_it_once_per_side() -> None:
    criterion = CombinedLoss(
        perceptual={"shallow": {"layers": ["layer1"], "backbone": "resnet18"}, "deep": {"layers": ["layer3"], "backbone": "resnet18", "weight": 0.5}},
        style={"layers": ["layer2"], "backbone": "resnet18", "weight": 2.0},
        weights=None,
    )  # fmt: skip
    assert len(criterion.extractors) == 1
    extractor = next(iter(criterion.extractors.values()))
    calls: list[int] = []
    extractor.layers.register_forward_hook(lambda *_: calls.append(1))
    pred, target = torch.rand(2, 3, 32, 32, requires_grad=True), torch.rand(2, 3, 32, 32)
    total, parts = criterion(pred, target)
    assert len(calls) == 2, "one pass for pred, one for target"
    assert sorted(parts) == ["perceptual/deep", "perceptual/shallow", "style"]
    torch.testing.assert_close(
        total, parts["perceptual/shallow"] + 0.5 * parts["perceptual/deep"] + 2.0 * parts["style"]
    )
    shared = extractor(pred)["layer3"], extractor(target)["layer3"]
    torch.testing.assert_close(parts["perceptual/deep"], (shared[0] - shared[1]).abs().mean())


def test_terms_with_another_input_policy_or_backbone_get_their_own_pass() -> None:
    criterion = CombinedLoss(
        lpips={"net": "alex"},
        perceptual={
            "vgg": {"layers": ["relu2_2"]},
            "logits": {"backbone": "resnet18", "layers": ["logits"], "resize": 48, "distance": "l2", "weight": 0.1},
            "features": {"backbone": "resnet18", "layers": ["layer2"]},
        },
        weights=None,
    )
    assert len(criterion.extractors) == 4, "alexnet, vgg16, resnet18 at 48 px, resnet18 as given"
    total, parts = criterion(torch.rand(2, 3, 40, 40), torch.rand(2, 3, 40, 40))
    assert sorted(parts) == ["lpips", "perceptual/features", "perceptual/logits", "perceptual/vgg"]
    expected = (
        parts["lpips"] + parts["perceptual/vgg"] + 0.1 * parts["perceptual/logits"] + parts["perceptual/features"]
    )
    torch.testing.assert_close(total, expected)


def test_resize_and_logits_follow_the_maskbit_formula(torchvision_weights) -> None:
    """MaskBit/TiTok: mse(net(norm(resize(x))), net(norm(resize(y)))), antialiased bilinear resize."""
    path = torchvision_weights("resnet18")
    loss = PerceptualLoss(["logits"], backbone="resnet18", distance="l2", resize=64)
    model = models.resnet18()
    model.load_state_dict(torch.load(path, weights_only=True))
    model.eval()
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )

    def logits(images: Tensor) -> Tensor:
        resized = F.interpolate(images, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
        return model((resized - mean) / std)

    x, y = torch.rand(2, 3, 100, 90), torch.rand(2, 3, 100, 90)
    torch.testing.assert_close(loss(x, y), F.mse_loss(logits(x), logits(y)), rtol=1e-5, atol=1e-6)


def test_vit_needs_its_size_or_resize() -> None:
    loss = PerceptualLoss(["encoder.layers.encoder_layer_0"], backbone="vit_b_16", weights=None)
    assert loss.extractor.fixed_size == 224
    with pytest.raises(ValueError, match=r"pred of size 64x64 does not fit .*224x224 images only.*resize=224"):
        loss(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    resized = PerceptualLoss(["encoder.layers.encoder_layer_0"], backbone="vit_b_16", weights=None, resize=224)
    assert resized(torch.rand(1, 3, 64, 80), torch.rand(1, 3, 64, 80)) > 0
    with pytest.raises(ValueError, match=r"vit_b_16 takes 224x224 images only; set resize=224"):
        PerceptualLoss(["conv_proj"], backbone="vit_b_16", weights=None, resize=128)


def test_too_small_images_name_the_minimum() -> None:
    loss = PerceptualLoss(["features.7"], backbone="convnext_tiny", weights=None)
    assert loss.min_size == 32
    with pytest.raises(ValueError, match=r"pred of size 16x40 is too small .*features.7.*convnext_tiny.*at least 32"):
        loss(torch.rand(1, 3, 16, 40), torch.rand(1, 3, 16, 40))


def test_unknown_tap_lists_the_nearest_names() -> None:
    with pytest.raises(
        ValueError, match=r"Unknown layer name 'layer4.2.relu2' for resnet50\. Nearest valid names: layer4\.2\.relu_2"
    ):
        PerceptualLoss(["layer4.2.relu2"], backbone="resnet50", weights=None)


def test_style_on_logits_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"Gram matrices need spatial feature maps.*\['logits'\].*2-D"):
        StyleLoss(["logits"], backbone="resnet18", weights=None)


def test_weights_by_enum_name_and_a_clear_error_when_missing(torchvision_weights) -> None:
    v1 = torchvision_weights("resnet50", "IMAGENET1K_V1", seed=1)
    v2 = torchvision_weights("resnet50", "IMAGENET1K_V2", seed=2)
    assert v1.name == "resnet50-0676ba61.pth" and v2.name == "resnet50-11ad3fa6.pth"
    for member, path in (("IMAGENET1K_V1", v1), ("imagenet", v2), ("DEFAULT", v2)):
        extractor = FeatureExtractor("resnet50", ["conv1"], weights=member)
        expected = torch.load(path, weights_only=True)["conv1.weight"]
        assert torch.equal(extractor.layers.conv1.weight, expected), member
    with pytest.raises(
        MissingWeightsError,
        match=r"mobilenet_v3_small-047dcff4\.pth.*weights='/path/to/mobilenet_v3_small-047dcff4\.pth'",
    ):
        FeatureExtractor("mobilenet_v3_small", ["features.1"])


# ---------------------------------------------------------------- a user's module


class Encoder(nn.Module):
    """A small network of the user's: BatchNorm, dropout, an in-place ReLU, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.block = nn.Sequential(
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.Dropout(0.5)
        )
        self.head = nn.Linear(16, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.block(self.stem(x)).mean(dim=(2, 3)))


def test_a_users_module_is_left_exactly_as_given_and_never_saved() -> None:
    torch.manual_seed(0)
    encoder = Encoder().train()
    encoder.block[0].weight.requires_grad_(False)  # a mixed state the loss must not "fix"
    before = module_snapshot(encoder)
    loss = PerceptualLoss(["stem.1", "block", "logits"], backbone=encoder)
    holder = nn.Sequential(nn.Conv2d(3, 3, 1), loss).train()
    pred = torch.rand(2, 3, 16, 16, requires_grad=True)
    loss(pred, torch.rand(2, 3, 16, 16)).backward()
    loss.to(torch.float64)
    loss.to(torch.float32)
    after = module_snapshot(encoder)
    for key in before:
        if key == "state":
            assert all(torch.equal(before[key][k], after[key][k]) for k in before[key])  # type: ignore[index]
        else:
            assert before[key] == after[key], key
    assert list(holder.state_dict()) == ["0.weight", "0.bias"]
    assert all(p.grad is None for p in encoder.parameters())
    assert not any(p.requires_grad for p in loss.parameters())


def test_a_users_module_taps_equal_its_own_hooks() -> None:
    torch.manual_seed(0)
    encoder = Encoder()
    with torch.no_grad():  # non-trivial statistics
        for bn in (encoder.stem[1], encoder.block[1]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    extractor = FeatureExtractor(encoder, ["stem.1", "block", "logits"], mean=(0.5,) * 3, std=(0.5,) * 3)
    x = torch.rand(2, 3, 16, 16)
    reference = copy.deepcopy(encoder).eval().to(memory_format=torch.channels_last)
    expected = _hooked(reference, ["stem.1", "block"], extractor.normalize(x))
    ours = extractor(x)
    for tap in ("stem.1", "block", "logits"):
        assert torch.equal(ours[tap], expected[tap]), tap
    assert (ours["stem.1"] < 0).any(), "pre-activation, although an in-place ReLU follows"
    assert "head" not in dict(FeatureExtractor(encoder, ["block"]).layers.named_children())


class Branching(nn.Module):
    """Python control flow on a tensor value: torch.fx cannot trace ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.gate = Gate()

    def forward(self, x: Tensor) -> Tensor:
        return self.gate(self.stem(x))


class Gate(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.relu() if x.mean() > 0 else -x


def test_an_untraceable_module_names_where_and_how_to_proceed() -> None:
    with pytest.raises(ValueError, match=r"torch.fx cannot trace Branching: inside 'gate'.*taps=\['gate'\]"):
        FeatureExtractor(Branching(), ["gate.relu"])
    module = Branching()  # 'gate' tapped whole: traced as a leaf
    extractor = FeatureExtractor(module, ["gate"])
    x = torch.rand(1, 3, 8, 8)
    expected = module.eval()(extractor.normalize(x))
    assert torch.equal(extractor(x)["gate"], expected)


def test_backbone_of_another_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="backbone must be a torchvision model name or an nn.Module"):
        FeatureExtractor(42, ["layer1"])  # type: ignore[arg-type]


def test_monai_recipe_equals_its_formula(torchvision_weights) -> None:
    """MONAI's 2-D torchvision perceptual loss: ResNet-50 ``layer4.2.relu_2``, ImageNet z-score,
    channel-normalised features, squared difference summed over channels, spatial mean."""
    path = torchvision_weights("resnet50")
    loss = PerceptualLoss(["layer4.2.relu_2"], backbone="resnet50", distance="normalized_l2")
    model = models.resnet50()
    model.load_state_dict(torch.load(path, weights_only=True))
    trunk = nn.Sequential(*list(model.children())[:-2]).eval()  # up to layer4, whose last op is relu_2
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )

    def normalize_tensor(f: Tensor, eps: float = 1e-10) -> Tensor:
        return f / (torch.sqrt(torch.sum(f**2, dim=1, keepdim=True)) + eps)

    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    fx, fy = trunk((x - mean) / std), trunk((y - mean) / std)
    expected = ((normalize_tensor(fx) - normalize_tensor(fy)) ** 2).sum(dim=1, keepdim=True).mean(dim=(2, 3))
    torch.testing.assert_close(loss(x, y), expected.mean(), rtol=1e-5, atol=1e-7)
    logits = PerceptualLoss(["logits"], backbone="resnet18", distance="normalized_l2", weights=None, reduction="none")
    assert logits(x, y).shape == (2,)
    with pytest.raises(
        ValueError, match=r"Unknown distance 'normalized_l2' for StyleComparison; choose one of \('l1', 'l2'\)"
    ):
        StyleLoss(["layer1"], backbone="resnet18", distance="normalized_l2", weights=None)


class WritesThroughAliases(nn.Module):
    """In-place ops on a view of, and on an identity's output of, the tapped conv output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.identity = nn.Identity()
        self.drop = nn.Dropout(0.5, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        flat = y.flatten(2)
        flat.relu_()  # writes into y through the view
        z = self.drop(self.identity(y))
        z.mul_(2.0)  # writes into y again, through two eval-mode identities
        return F.relu(z, inplace=True)


def test_in_place_writes_through_views_and_identities_never_reach_a_tap() -> None:
    torch.manual_seed(0)
    module = WritesThroughAliases()
    extractor = FeatureExtractor(module, ["conv", "logits"], mean=(0.0,) * 3, std=(1.0,) * 3)
    x = torch.rand(2, 3, 8, 8) - 0.5
    out = extractor(x)
    with torch.no_grad():
        expected_conv = module.conv(x)
        expected_logits = module.eval()(x)
    torch.testing.assert_close(out["conv"], expected_conv, rtol=1e-6, atol=1e-6)
    assert (out["conv"] < 0).any()
    torch.testing.assert_close(out["logits"], expected_logits, rtol=1e-6, atol=1e-6)
    assert available_taps(module)[:2] == ["conv", "flatten"]


def test_frozen_batchnorm_keeps_nothing_for_backward_and_matches_torchvision() -> None:
    """Eval-mode BatchNorm needs no activation for its input gradient: none is kept."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(16).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(-2, 2)
    frozen = FrozenBatchNorm(bn)
    x = torch.randn(2, 16, 12, 10).contiguous(memory_format=torch.channels_last)
    ours_x, ref_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    outputs: dict[str, Tensor] = {}
    ours_saved = saved_tensors(lambda: outputs.update(ours=frozen(ours_x * 1.0)))
    ref_saved = saved_tensors(lambda: outputs.update(ref=bn(ref_x * 1.0)))
    feature_bytes = x.numel() * x.element_size()
    assert any(t.untyped_storage().nbytes() >= feature_bytes for t in ref_saved.values()), "torchvision keeps its input"
    assert all(t.untyped_storage().nbytes() < feature_bytes for t in ours_saved.values())
    assert torch.equal(outputs["ours"], outputs["ref"])
    grad = torch.randn_like(outputs["ref"])
    (outputs["ours"] * grad).sum().backward()
    (outputs["ref"] * grad).sum().backward()
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=1e-6, atol=1e-6)
    assert ours_x.grad.is_contiguous(memory_format=torch.channels_last)
