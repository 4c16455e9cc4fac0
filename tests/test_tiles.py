"""tile= (issue 25): a large image scored tile by tile equals the untiled loss, values and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from perceptual_loss import DISTSLoss, FeatureExtractor, LPIPSLoss, PerceptualLoss, StyleLoss
from perceptual_loss.tiles import TileGeometry, feature_sizes

from .helpers import value_and_grads

VGG_TAPS = ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]


def _run(loss: nn.Module, pred: torch.Tensor, target: torch.Tensor, tile: int | None, **kwargs):
    loss.tile = tile
    loss._geometry = None if tile is None else TileGeometry.of(loss.extractor.layers)
    return value_and_grads(loss, pred, target, **kwargs)


def _pair(n: int, height: int, width: int, dtype: torch.dtype = torch.float32):
    generator = torch.Generator().manual_seed(0)
    pred = torch.rand(n, 3, height, width, generator=generator, dtype=dtype)
    return pred, (pred + 0.3 * torch.rand(n, 3, height, width, generator=generator, dtype=dtype)).clamp(0, 1)


def test_perceptual_tiled_equals_untiled_at_an_odd_size() -> None:
    loss = PerceptualLoss(VGG_TAPS, weights=None, tile=128)  # halo 64: cores of 128 cut 1 x 201 x 143 in 2 x 2
    pred, target = _pair(1, 201, 143)
    untiled = _run(loss, pred, target, None)
    tiled = _run(loss, pred, target, 128)
    torch.testing.assert_close(tiled[0], untiled[0], rtol=1e-5, atol=0)
    torch.testing.assert_close(tiled[1], untiled[1], rtol=0, atol=1e-4 * untiled[1].abs().max().item())


@pytest.mark.parametrize("net", ["alex", "squeeze"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_lpips_tiled_is_exact_in_float64_with_a_target_that_requires_grad(net: str, reduction: str) -> None:
    loss = LPIPSLoss(net=net, weights=None, reduction=reduction).double()
    geometry = TileGeometry.of(loss.extractor.layers)
    pred, target = _pair(2, 2 * geometry.halo + 77, 2 * geometry.halo + 31, torch.float64)
    target.requires_grad_()
    untiled = _run(loss, pred, target, None)
    tiled = _run(loss, pred, target, 2 * geometry.halo)
    for ours, reference in zip(tiled, untiled):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("mask_mode", ["area", "inside"])
def test_tiled_with_masks_is_exact_in_float64(mask_mode: str) -> None:
    loss = LPIPSLoss(net="alex", weights=None, mask_mode=mask_mode).double()
    pred, target = _pair(2, 300, 250, torch.float64)
    generator = torch.Generator().manual_seed(3)
    masks = [torch.rand(2, 1, 300, 250, generator=generator, dtype=torch.float64), torch.rand(1, 1, 300, 250) > 0.3]
    for mask in masks:
        untiled = _run(loss, pred, target, None, mask=mask)
        tiled = _run(loss, pred, target, 224, mask=mask)
        torch.testing.assert_close(tiled[:2], untiled[:2], rtol=1e-10, atol=1e-15)


def test_tiles_and_chunks_together() -> None:
    loss = LPIPSLoss(net="squeeze", weights=None, chunk_size=2).double()
    pred, target = _pair(3, 300, 290, torch.float64)
    untiled = _run(loss, pred, target, None)
    tiled = _run(loss, pred, target, 288)
    torch.testing.assert_close(tiled[:2], untiled[:2], rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize(
    ("backbone", "taps"),
    [("vgg16", VGG_TAPS + ["relu5_3", "pool5"]), ("vgg19", ["conv5_4"]), ("alexnet", ["relu1", "relu5"]),
     ("squeezenet1_1", ["relu1", "fire3", "fire9"])],
)  # fmt: skip
def test_the_tap_sizes_are_the_layers_own(backbone: str, taps: list[str]) -> None:
    extractor = FeatureExtractor(backbone, taps, weights=None)
    for height, width in ((223, 301), (64, 65), (401, 257)):
        with torch.no_grad():
            features = extractor(torch.rand(1, 3, height, width))
        expected = {tap: tuple(features[tap].shape[-2:]) for tap in taps}
        assert feature_sizes(extractor.layers, height, width) == expected


def test_bad_tiles_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"tile=100 is smaller than twice the halo .* use tile >= 128"):
        PerceptualLoss(VGG_TAPS, weights=None, tile=100)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"tile must be a positive int \(pixels per tile side\) or None"):
            PerceptualLoss(["relu1_2"], weights=None, tile=bad)
    with pytest.raises(ValueError, match="tile= needs the receptive fields of the classic trunks .* resnet18"):
        PerceptualLoss(["layer1"], backbone="resnet18", weights=None, tile=512)
    with pytest.raises(ValueError, match="tile= needs the receptive fields .* vgg16"):
        PerceptualLoss(["relu1_2"], weights=None, tile=512, resize=256)
    for loss in (
        lambda: StyleLoss(weights=None, tile=512),
        lambda: DISTSLoss(weights=None, tile=512),
        lambda: PerceptualLoss(["relu1_2"], weights=None, distance="fro", tile=512),
        lambda: LPIPSLoss(net="alex", weights=None, spatial=True, tile=512),
    ):
        with pytest.raises(ValueError, match="has statistics over the whole image .* cannot be tiled"):
            loss()
