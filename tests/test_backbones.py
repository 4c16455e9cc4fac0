"""Tap tables, truncation, normalisation and the frozen contract of FeatureExtractor."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision import models
from torchvision.models.squeezenet import Fire

from perceptual_loss import TAPS, FeatureExtractor, available_taps
from perceptual_loss.weights import imagenet_weights_path

from .helpers import run_to, saved_tensors, storage_bytes, torchvision_features


@pytest.mark.parametrize(
    ("backbone", "name", "index"),
    [
        ("vgg16", "conv1_1", 0), ("vgg16", "relu1_2", 3), ("vgg16", "pool1", 4), ("vgg16", "relu2_2", 8),
        ("vgg16", "relu3_3", 15), ("vgg16", "relu4_3", 22), ("vgg16", "conv5_3", 28), ("vgg16", "relu5_3", 29),
        ("vgg16", "pool5", 30), ("vgg19", "relu2_2", 8), ("vgg19", "relu3_4", 17), ("vgg19", "relu4_4", 26),
        ("vgg19", "conv5_4", 34), ("vgg19", "relu5_4", 35), ("vgg19", "pool5", 36),
        ("alexnet", "relu1", 1), ("alexnet", "relu5", 11), ("squeezenet1_1", "fire9", 12),
    ],
)  # fmt: skip
def test_known_indices(backbone: str, name: str, index: int) -> None:
    assert TAPS[backbone][name] == index


@pytest.mark.parametrize("backbone", sorted(TAPS))
def test_every_tap_names_the_right_torchvision_layer(backbone: str) -> None:
    with torch.device("meta"):
        features = getattr(models, backbone)(weights=None).features
    table = TAPS[backbone]
    assert sorted(table.values()) == list(range(len(features))), "every layer has exactly one name"
    kinds = {"conv": nn.Conv2d, "bn": nn.BatchNorm2d, "relu": nn.ReLU, "pool": nn.MaxPool2d, "fire": Fire}
    for name, index in table.items():
        kind = next(k for k in kinds if name.startswith(k))
        assert isinstance(features[index], kinds[kind]), (name, index, features[index])


def test_unknown_layer_lists_the_valid_names() -> None:
    with pytest.raises(
        ValueError, match="relu_2_2.*Nearest valid names: relu2_2.*valid names: conv1_1, relu1_1"
    ) as info:
        FeatureExtractor("vgg16", ["relu_2_2"], weights=None)
    assert "relu5_3" in str(info.value)


def test_unknown_backbone() -> None:
    with pytest.raises(ValueError, match="Unknown backbone 'resnet51'. Did you mean resnet50.*alexnet, convnext_base"):
        FeatureExtractor("resnet51", ["layer1"], weights=None)


def test_available_taps_in_network_order() -> None:
    assert available_taps("vgg16")[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]


@pytest.mark.parametrize(("taps", "length"), [(["relu1_2"], 4), (["relu2_2", "conv1_1"], 9), (["relu5_3"], 30)])
def test_truncated_at_deepest_tap(taps: list[str], length: int) -> None:
    extractor = FeatureExtractor("vgg16", taps)
    assert len(extractor.layers) == length
    with torch.device("meta"):
        reference = models.vgg16(weights=None).features[:length]
    expected_parameters = sum(p.numel() for p in reference.parameters())
    assert sum(p.numel() for p in extractor.layers.parameters()) == expected_parameters


@pytest.mark.parametrize(
    ("backbone", "taps"),
    [
        ("vgg16", ["conv1_1", "relu1_2", "conv3_3", "relu3_3", "pool4", "conv5_3"]),
        ("vgg19", ["conv5_4", "relu5_4", "relu2_2"]),
        ("alexnet", ["conv2", "relu1", "relu5"]),
        ("squeezenet1_1", ["relu1", "fire3", "fire9"]),
    ],
)
def test_features_equal_direct_torchvision(backbone: str, taps: list[str], checkpoints) -> None:
    """Loaded through the ImageNet path, the features equal torchvision's, conv taps pre-activation."""
    extractor = FeatureExtractor(backbone, taps)
    reference = torchvision_features(backbone, imagenet_weights_path(backbone))
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    ours = extractor(x)
    expected = run_to(reference, x, {t: TAPS[backbone][t] for t in taps})
    assert list(ours) == [t for t in sorted(taps, key=TAPS[backbone].get)]
    for name in taps:
        torch.testing.assert_close(ours[name], expected[name], rtol=1e-5, atol=1e-5)
        if name.startswith("conv"):
            assert (ours[name] < 0).any(), f"{name} must be pre-activation"


def test_input_range_minus_one_one() -> None:
    x01 = torch.rand(1, 3, 32, 32)
    a = FeatureExtractor("vgg16", ["relu2_2"], input_range=(0, 1))(x01)["relu2_2"]
    b = FeatureExtractor("vgg16", ["relu2_2"], input_range=(-1, 1))(x01 * 2 - 1)["relu2_2"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [(1, 0), (0,), "01", (0, float("nan"))])
def test_bad_input_range(bad) -> None:
    with pytest.raises(ValueError, match="input_range"):
        FeatureExtractor("vgg16", ["relu1_1"], weights=None, input_range=bad)


@pytest.mark.parametrize(
    ("backbone", "taps", "size"),
    [("vgg16", ["relu1_2"], 1), ("vgg16", ["relu2_2"], 2), ("vgg16", ["relu5_3"], 16), ("vgg16", ["pool5"], 32),
     ("alexnet", ["relu5"], 31), ("squeezenet1_1", ["fire9"], 17)],
)  # fmt: skip
def test_min_size_is_exact(backbone: str, taps: list[str], size: int) -> None:
    extractor = FeatureExtractor(backbone, taps, weights=None)
    assert extractor.min_size == size
    assert _gives_features(extractor.layers, size)
    assert size == 1 or not _gives_features(extractor.layers, size - 1)


def _gives_features(layers: nn.Sequential, size: int) -> bool:
    x = torch.rand(1, 3, size, size)
    try:
        for layer in layers:
            x = layer(x)
    except RuntimeError:
        return False
    return min(x.shape[-2:]) >= 1


def test_frozen_eval_locked_and_out_of_state_dict() -> None:
    extractor = FeatureExtractor("alexnet", ["relu2"], weights=None)
    assert all(not p.requires_grad for p in extractor.parameters())
    assert all(m.training for m in extractor.modules())  # like any new module: nothing here reads it
    x = torch.rand(2, 3, 48, 48)
    expected = extractor(x)["relu2"]
    parent = nn.Sequential(nn.Conv2d(3, 3, 1), extractor)
    parent.train()
    # The flag follows the parent (Lightning warns about modules left in eval mode), but every
    # module here ignores it: the features are the same bit for bit.
    assert parent.training and all(m.training for m in extractor.modules())
    torch.testing.assert_close(extractor(x)["relu2"], expected, rtol=0, atol=0)
    parent.eval()
    assert not any(m.training for m in extractor.modules())
    assert list(parent.state_dict()) == ["0.weight", "0.bias"]
    assert extractor.state_dict() == {}
    assert list(extractor.buffers()) == [], "frozen tensors are parameters, so DDP does not re-broadcast them"


def test_to_dtype_moves_everything() -> None:
    extractor = FeatureExtractor("alexnet", ["relu2"], weights=None).to(torch.float64)
    assert {p.dtype for p in extractor.parameters()} == {torch.float64}
    assert extractor(torch.rand(1, 3, 40, 40, dtype=torch.float64))["relu2"].dtype == torch.float64


def _conv_weights(extractor: FeatureExtractor) -> list[torch.Tensor]:
    return [m.weight for m in extractor.layers.modules() if isinstance(m, nn.Conv2d)]


def test_cpu_and_cuda_run_channels_last_other_devices_keep_the_default_layout() -> None:
    extractor = FeatureExtractor("squeezenet1_1", ["fire3"], weights=None)
    weights = [w for w in _conv_weights(extractor) if w.shape[-1] > 1]  # 1x1 kernels: both layouts at once
    assert weights and all(
        w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in weights
    )
    features = extractor(torch.rand(2, 3, 40, 40))["fire3"]
    assert features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous()
    extractor.to(torch.float64)  # any _apply re-picks the layout: still CPU, still channels_last
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(extractor))
    extractor.to("meta")  # neither CPU nor CUDA (as MPS would be): back to the default layout
    assert all(w.is_contiguous() for w in _conv_weights(extractor))


def test_gradient_reaches_the_input_in_its_own_layout() -> None:
    extractor = FeatureExtractor("alexnet", ["relu2"], weights=None)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    extractor(x)["relu2"].sum().backward()
    assert x.grad is not None and x.grad.is_contiguous(), "a contiguous leaf gets a contiguous .grad"


@pytest.mark.parametrize(("backbone", "tap"), [("vgg16", "relu5_3"), ("alexnet", "relu5"), ("squeezenet1_1", "fire9")])
def test_pools_and_fires_keep_less_for_backward_and_match_torchvision(backbone: str, tap: str) -> None:
    """No pool keeps its int64 argmax (recomputed in backward) and no Fire module keeps its output
    twice (its ReLUs' mask is read from the concatenation the next layer keeps), yet values and
    gradients are bit for bit torchvision's."""
    extractor = FeatureExtractor(backbone, [tap], weights=None)
    reference = getattr(models, backbone)(weights=None).features[: len(extractor.layers)]
    reference.load_state_dict(extractor.layers.state_dict())
    reference.eval().requires_grad_(False).to(memory_format=torch.channels_last)  # as ours runs on CPU
    x = torch.rand(2, 3, 80, 72)
    ours_x, ref_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    outputs: dict[str, torch.Tensor] = {}
    ours_saved = saved_tensors(lambda: outputs.update(ours=extractor(ours_x)[tap]))
    normalized = lambda: (ref_x * extractor.scale + extractor.shift).contiguous(memory_format=torch.channels_last)
    fire_outputs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda m, i, o: fire_outputs.append(o)) for m in reference if isinstance(m, Fire)]
    ref_saved = saved_tensors(lambda: outputs.update(ref=reference(normalized())))
    for hook in hooks:
        hook.remove()

    indices = [t for t in ref_saved.values() if t.dtype == torch.int64]
    assert len(indices) == {"vgg16": 4, "alexnet": 2, "squeezenet1_1": 3}[backbone], "torchvision's pools save argmaxes"
    assert not [t for t in ours_saved.values() if t.dtype == torch.int64]
    # Each Fire's ReLU outputs (together its output's size) are no longer kept, except the last
    # layer's: nothing after it keeps the concatenation, so that Fire keeps it instead.
    duplicates = fire_outputs[:-1] if isinstance(reference[-1], Fire) else fire_outputs
    assert len(fire_outputs) == {"vgg16": 0, "alexnet": 0, "squeezenet1_1": 8}[backbone]
    expected = storage_bytes(ref_saved.values()) - storage_bytes(indices) - storage_bytes(duplicates)
    assert storage_bytes(ours_saved.values()) == expected

    assert torch.equal(outputs["ours"], outputs["ref"])
    grad = torch.randn_like(outputs["ref"])
    (outputs["ours"] * grad).sum().backward()
    (outputs["ref"] * grad).sum().backward()
    assert torch.equal(ours_x.grad, ref_x.grad)


def test_input_is_not_modified() -> None:
    extractor = FeatureExtractor("vgg16", ["conv1_1", "relu1_1"], weights=None)
    x = torch.rand(1, 3, 8, 8) - 0.5
    before = x.clone()
    extractor(x)
    assert torch.equal(x, before)


def test_construction_is_quiet(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    FeatureExtractor("vgg16", ["relu2_2"])
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
