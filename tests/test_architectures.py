"""The classic networks' tables equal torchvision's models, and the classic path never imports torchvision."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models

from perceptual_loss.backbones import TAPS, default_normalization
from perceptual_loss.backbones.architectures import CLASSIC_BACKBONES, classic_features, classic_state_shapes
from perceptual_loss.weights import CLASSIC_IMAGENET_FILES, imagenet_weights_path, weights_entry

REPO = Path(__file__).resolve().parents[1]


def test_one_list_of_classic_backbones() -> None:
    assert set(CLASSIC_BACKBONES) == set(TAPS) == set(CLASSIC_IMAGENET_FILES)


def _layers(features: nn.Module) -> list[tuple[str, str, str]]:
    """Every module of ``features`` by name: its class name and, for a leaf, its repr."""
    return [
        (name, type(module).__name__, repr(module) if not list(module.children()) else "")
        for name, module in features.named_modules()
    ]


@pytest.mark.parametrize("backbone", CLASSIC_BACKBONES)
def test_features_are_torchvisions_layer_for_layer(backbone: str) -> None:
    with torch.device("meta"):
        ours = classic_features(backbone)
        theirs = models.get_model(backbone, weights=None)
    assert _layers(ours) == _layers(theirs.features)
    for name, module in ours.named_modules():  # the Fire modules: the same attributes torchvision's have
        if type(module).__name__ == "Fire":
            assert module.inplanes == theirs.features.get_submodule(name).inplanes


@pytest.mark.parametrize("backbone", CLASSIC_BACKBONES)
def test_expected_state_is_torchvisions_full_model(backbone: str) -> None:
    """The weights check compares a file with these keys and shapes: classifier included."""
    with torch.device("meta"):
        expected = classic_state_shapes(backbone, classic_features(backbone))
        theirs = models.get_model(backbone, weights=None).state_dict()
    assert list(expected) == list(theirs)
    assert {key: tuple(value.shape) for key, value in expected.items()} == {
        key: tuple(value.shape) for key, value in theirs.items()
    }


@pytest.mark.parametrize("backbone", ["alexnet", "vgg11_bn", "squeezenet1_1"])
def test_features_compute_torchvisions_values(backbone: str) -> None:
    """With torchvision's weights loaded strictly, the same outputs bit for bit (BatchNorm in eval)."""
    torch.manual_seed(0)
    theirs = models.get_model(backbone, weights=None).eval()
    for module in theirs.modules():
        if isinstance(module, nn.BatchNorm2d):  # statistics that are not the identity
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    ours = classic_features(backbone).eval()
    ours.load_state_dict(theirs.features.state_dict(), strict=True)
    x = torch.randn(2, 3, 80, 72)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs.features(x))


@pytest.mark.parametrize("backbone", CLASSIC_BACKBONES)
def test_imagenet_file_is_torchvisions_v1_entry(backbone: str) -> None:
    enum = models.get_model_weights(backbone)
    assert enum.DEFAULT is enum.IMAGENET1K_V1
    assert CLASSIC_IMAGENET_FILES[backbone] == enum.IMAGENET1K_V1.url
    for name in ("imagenet", "IMAGENET1K_V1", "DEFAULT"):
        entry = weights_entry(backbone, name)
        assert entry is not None and (entry.name, entry.url) == ("IMAGENET1K_V1", enum.IMAGENET1K_V1.url)
    assert imagenet_weights_path(backbone).name == os.path.basename(enum.IMAGENET1K_V1.url)
    transforms = enum.IMAGENET1K_V1.transforms()
    assert default_normalization(backbone, "imagenet") == (tuple(transforms.mean), tuple(transforms.std))


def test_other_entries_still_come_from_torchvisions_enum() -> None:
    entry = weights_entry("vgg16", "IMAGENET1K_FEATURES")
    assert entry is not None and entry.url == models.VGG16_Weights.IMAGENET1K_FEATURES.url
    entry = weights_entry("resnet50", "imagenet")
    assert entry is not None and (entry.name, entry.url) == ("IMAGENET1K_V2", models.ResNet50_Weights.DEFAULT.url)
    assert weights_entry("vgg16", "some/file.pth") is None


def test_classic_losses_and_the_evaluator_never_import_torchvision(torch_home: Path, tmp_path: Path) -> None:
    """torchvision imports torch._dynamo, a second of start-up on a CPU: the classic path, the
    losses built on it and ``perceptual-loss eval`` run without it (with the cached ImageNet files)."""
    from PIL import Image

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for index in range(2):
            pixels = torch.randint(0, 256, (48, 48, 3), dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / folder / f"{index}.png")
    script = textwrap.dedent(
        f"""
        import runpy, sys
        import torch
        from perceptual_loss import CombinedLoss, DISTSLoss, LPIPSLoss, PerceptualLoss, StyleLoss, evaluate_folders
        from perceptual_loss.weights import imagenet_weights_path
        x, y = torch.rand(1, 3, 48, 48), torch.rand(1, 3, 48, 48)
        LPIPSLoss(net="alex")(x, y)
        LPIPSLoss(net="squeeze")(x, y)
        DISTSLoss()(x, y)
        PerceptualLoss(layers=["relu1_2", "relu2_2"])(x, y)
        PerceptualLoss(layers=["relu1_2"], weights=str(imagenet_weights_path("vgg16")))(x, y)  # a path
        StyleLoss(backbone="vgg19_bn", layers=["bn1_1"], weights=None)(x, y)
        CombinedLoss(l1=1.0, perceptual={{"weight": 0.1, "layers": ["relu1_2"]}})(x, y)
        evaluate_folders({str(tmp_path / "a")!r}, {str(tmp_path / "b")!r}, metrics=["lpips", "psnr", "ssim", "dists"])
        sys.argv = ["perceptual-loss", "eval", {str(tmp_path / "a")!r}, {str(tmp_path / "b")!r}, "--quiet"]
        try:
            runpy.run_module("perceptual_loss", run_name="__main__")
        except SystemExit as stop:
            assert not stop.code, stop.code
        print(sorted(name for name in sys.modules if name.split(".")[0] == "torchvision"))
        """
    )
    env = {**os.environ, "TORCH_HOME": str(torch_home)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
