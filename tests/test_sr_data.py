"""SR example building blocks: data sources and their errors, degradation, metrics, networks, weights=auto."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytest.importorskip("lightning")
pytest.importorskip("torchmetrics")
pytest.importorskip("skimage")

import torch
import torch.nn.functional as F

from examples.super_resolution.data import (
    EMBEDDED_TRAIN,
    EMBEDDED_VAL,
    CenterCrops,
    DataError,
    EmbeddedImages,
    FolderImages,
    RandomCrops,
    SRDataModule,
    bicubic_downsample,
)
from examples.super_resolution.metrics import SRMetrics, psnr_y, rgb_to_y, shave, ssim_y
from examples.super_resolution.networks import EDSR, ESPCN, Discriminator, bicubic_upsample
from examples.super_resolution.weights import RANDOM_NOTE, build_with_weights
from perceptual_loss import MissingWeightsError

from .examples_sr import write_png

# ---------------------------------------------------------------- bad data


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"holds no image file.*\.png"):
        FolderImages(tmp_path)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        FolderImages(tmp_path / "nope")


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    write_png(tmp_path / "good.png", 64, 64)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(DataError, match=r"Cannot read image file .*broken\.png"):
        FolderImages(tmp_path)


def test_truncated_pixels_are_named_when_loaded(tmp_path: Path) -> None:
    path = write_png(tmp_path / "cut.png", 64, 64)
    path.write_bytes(path.read_bytes()[:200])  # header fine, pixel data cut
    source = FolderImages(tmp_path)
    with pytest.raises(DataError, match=r"Cannot read image file .*cut\.png"):
        source.load(0)


def test_image_smaller_than_the_crop_names_file_size_and_crop(tmp_path: Path) -> None:
    write_png(tmp_path / "big.png", 100, 100)
    write_png(tmp_path / "small.png", 40, 50)
    source = FolderImages(tmp_path)
    with pytest.raises(DataError, match=r"small\.png is 40x50 \(HxW\), smaller than the HR crop 64x64"):
        SRDataModule(source, source, scale=2, crop_size=64)


def test_crop_must_be_a_multiple_of_scale(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", 100, 100)
    source = FolderImages(tmp_path)
    with pytest.raises(ValueError, match="multiple of scale"):
        SRDataModule(source, source, scale=4, crop_size=30)


def test_unknown_embedded_name() -> None:
    with pytest.raises(DataError, match="colorwheel"):
        EmbeddedImages(["colorwheel"])


# ---------------------------------------------------------------- sources and crops


def test_embedded_split_is_disjoint_photographs() -> None:
    assert not set(EMBEDDED_TRAIN) & set(EMBEDDED_VAL)
    val = EmbeddedImages(EMBEDDED_VAL)
    assert val.sizes == [(300, 451), (427, 640), (500, 741)]
    assert all(val.load(i).dtype == torch.uint8 and val.load(i).shape[0] == 3 for i in range(3))


def test_random_crops_shapes_range_and_degradation(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", 80, 90, seed=3)
    source = FolderImages(tmp_path)
    torch.manual_seed(0)
    dataset = RandomCrops(source, scale=4, crop_size=32, length=5)
    lr, hr = dataset[0]
    assert hr.shape == (3, 32, 32) and lr.shape == (3, 8, 8)
    assert hr.dtype == torch.float32 and hr.min() >= 0 and hr.max() <= 1
    assert torch.equal(lr, bicubic_downsample(hr, 4))
    torch.manual_seed(0)
    again = RandomCrops(source, scale=4, crop_size=32, length=5)
    assert torch.equal(again[0][1], hr)  # reproducible under a seed
    assert not torch.equal(dataset[1][1], hr)  # crops vary


def test_bicubic_downsample_matches_the_definition() -> None:
    hr = torch.rand(2, 3, 16, 24)
    expected = F.interpolate(hr, size=(8, 12), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    assert torch.equal(bicubic_downsample(hr, 2), expected)
    assert bicubic_downsample(hr[0], 2).shape == (3, 8, 12)


def test_center_crops_are_multiples_of_scale() -> None:
    dataset = CenterCrops(EmbeddedImages(["chelsea"]), scale=4, crop_size=None)
    lr, hr, name = dataset[0]
    assert name == "chelsea" and hr.shape == (3, 300, 448) and lr.shape == (3, 75, 112)


# ---------------------------------------------------------------- metrics


def test_luma_is_bt601_studio_swing() -> None:
    white, black = torch.ones(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    assert rgb_to_y(white).flatten()[0].item() == pytest.approx(235 / 255, abs=1e-6)
    assert rgb_to_y(black).flatten()[0].item() == pytest.approx(16 / 255, abs=1e-6)


def test_psnr_and_ssim_on_y_with_shave() -> None:
    target = torch.rand(2, 3, 32, 32)
    pred = target.clone()
    pred[..., :2, :] = 1 - pred[..., :2, :]  # damage only the border rows
    assert torch.isinf(psnr_y(pred, target, border=2)).all()  # shaved away
    assert torch.isfinite(psnr_y(pred, target, border=0)).all()
    noisy = (target + 0.05 * torch.randn_like(target)).clamp(0, 1)
    y_mse = (shave(rgb_to_y(noisy) - rgb_to_y(target), 2) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(psnr_y(noisy, target, 2), -10 * torch.log10(y_mse), atol=1e-3)
    assert (ssim_y(target, target, 2) > 0.999).all() and (ssim_y(noisy, target, 2) < 0.99).all()


def test_sr_metrics_per_image_and_no_backbone_in_state_dict() -> None:
    metrics = SRMetrics(scale=2, lpips_weights="imagenet")
    target = torch.rand(3, 3, 40, 40)
    scores = metrics(target.clone(), target)
    assert set(scores) == {"psnr", "ssim", "lpips"} and all(v.shape == (3,) for v in scores.values())
    assert scores["lpips"].abs().max() < 1e-5 and metrics.state_dict() == {}


# ---------------------------------------------------------------- networks


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("network", [ESPCN, EDSR])
def test_networks_start_at_bicubic_and_have_the_right_shape(network: type, scale: int) -> None:
    model = network(scale=scale)
    lr = torch.rand(2, 3, 10, 12)
    sr = model(lr)
    assert sr.shape == (2, 3, 10 * scale, 12 * scale)
    assert torch.allclose(sr, bicubic_upsample(lr, scale))  # zero-initialised residual
    sr.sum().backward()
    assert model.last.weight.grad is not None and model.last.weight.grad.abs().sum() > 0


def test_discriminator_any_size() -> None:
    d = Discriminator()
    assert d(torch.rand(2, 3, 48, 48)).shape == d(torch.rand(2, 3, 64, 80)).shape == (2, 1)


# ---------------------------------------------------------------- weights=auto


def test_auto_falls_back_to_random_loudly(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def factory(weights: object) -> str:
        calls.append(weights)
        if weights == "imagenet":
            raise MissingWeightsError("vgg16-397923af.pth not cached and offline")
        return "built"

    with caplog.at_level(logging.WARNING):
        built, resolved = build_with_weights(factory, "auto", "the loss")
    assert built == "built" and calls == ["imagenet", None]
    assert resolved.random and resolved.arg is None and resolved.note == RANDOM_NOTE
    assert "RANDOM backbone weights" in caplog.text and "vgg16-397923af.pth" in caplog.text


def test_auto_uses_imagenet_when_available_and_explicit_choices_are_strict() -> None:
    _, resolved = build_with_weights(lambda w: w, "auto", "x")
    assert resolved.arg == "imagenet" and not resolved.random
    assert build_with_weights(lambda w: w, "none", "x")[1].random

    def offline(weights: object) -> None:
        raise MissingWeightsError("offline")

    with pytest.raises(MissingWeightsError):
        build_with_weights(offline, "imagenet", "x")
    assert build_with_weights(lambda w: w, "/some/vgg16.pth", "x")[0] == "/some/vgg16.pth"
