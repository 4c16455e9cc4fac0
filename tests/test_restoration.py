"""SSIM, MS-SSIM, focal frequency, FFT and contextual losses against their references and formulas."""

from __future__ import annotations

import itertools

import pytest
import torch

from perceptual_loss import (
    ContextualLoss,
    FFTLoss,
    FocalFrequencyLoss,
    MSSSIMLoss,
    SSIMLoss,
    contextual_distance,
    ms_ssim,
    ssim,
)
from perceptual_loss.losses.contextual import ContextualComparison

pytorch_msssim = pytest.importorskip("pytorch_msssim", reason="pytorch-msssim is in the [test] extra")
focal_frequency_loss = pytest.importorskip("focal_frequency_loss", reason="focal-frequency-loss is in the [test] extra")


def _pair(shape: tuple[int, ...], scale: float = 1.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=generator)
    y = (x + 0.2 * torch.randn(shape, generator=generator)).clamp(0, 1)
    return x * scale, y * scale


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("data_range", [1.0, 255.0])
@pytest.mark.parametrize("size", [(256, 256), (193, 241)])
@pytest.mark.parametrize("index", ["ssim", "ms_ssim"])
def test_ssim_and_ms_ssim_equal_pytorch_msssim(
    index: str, size: tuple[int, int], data_range: float, channels: int
) -> None:
    x, y = _pair((2, channels, *size), data_range)
    loss = (
        SSIMLoss(data_range=data_range, reduction="none")
        if index == "ssim"
        else MSSSIMLoss(data_range=data_range, reduction="none")
    )
    reference = getattr(pytorch_msssim, index)
    ours_x, theirs_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    value = loss(ours_x, y)
    expected = 1 - reference(theirs_x, y, data_range=data_range, size_average=False)
    torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
    value.sum().backward()
    expected.sum().backward()
    assert ours_x.grad is not None and theirs_x.grad is not None
    torch.testing.assert_close(ours_x.grad, theirs_x.grad, rtol=0, atol=1e-5 * theirs_x.grad.abs().max().item())


def test_ssim_conventions_of_scikit_image_and_the_evaluator() -> None:
    from perceptual_loss.metrics import ssim as evaluator_ssim

    skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is in the [examples] extra")
    x, y = _pair((2, 3, 40, 52))
    x, y = x.double(), y.double()
    sample = 1 - SSIMLoss(sample_covariance=True, reduction="none")(x, y)
    population = 1 - SSIMLoss(reduction="none")(x, y)
    for i in range(2):
        expected = skimage_metrics.structural_similarity(
            x[i].numpy(), y[i].numpy(), gaussian_weights=True, sigma=1.5, data_range=1.0, channel_axis=0
        )
        assert sample[i].item() == pytest.approx(expected, abs=1e-10)
    torch.testing.assert_close(population, evaluator_ssim(x, y), rtol=0, atol=1e-12)
    assert (sample - population).abs().min() > 1e-7, "the two conventions differ"


def test_a_first_call_under_inference_mode_leaves_training_calls_working() -> None:
    """The window and the scale weights are made once; made first under inference mode (the
    evaluator), they must still serve autograd afterwards."""
    from perceptual_loss.structural import _cached_exponents, _cached_window

    _cached_window.cache_clear(), _cached_exponents.cache_clear()
    x, y = _pair((1, 3, 176, 176))
    with torch.inference_mode():
        SSIMLoss()(x, y), MSSSIMLoss()(x, y)
    pred = x.clone().requires_grad_()
    (SSIMLoss()(pred, y) + MSSSIMLoss()(pred, y)).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_ssim_edges_constant_images_autocast_and_masks() -> None:
    constant = torch.full((1, 3, 64, 64), 0.5, requires_grad=True)
    value = SSIMLoss()(constant, torch.zeros(1, 3, 64, 64))
    value.backward()
    assert torch.isfinite(value) and constant.grad is not None and torch.isfinite(constant.grad).all()
    x, y = _pair((2, 3, 64, 64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = SSIMLoss()(x.bfloat16(), y.bfloat16())
    assert half.dtype == torch.float32 and abs(half.item() - SSIMLoss()(x, y).item()) < 2e-2
    torch.testing.assert_close(SSIMLoss()(x, y, mask=torch.ones(1, 1, 64, 64)), SSIMLoss()(x, y))
    left = torch.zeros(1, 1, 64, 64)
    left[..., :32] = 1
    changed = y.clone()
    changed[..., 48:] = 0  # only far from the masked region (more than the window's half)
    torch.testing.assert_close(SSIMLoss()(x, changed, mask=left), SSIMLoss()(x, y, mask=left))


def test_ssim_bad_input_names_the_fix() -> None:
    with pytest.raises(ValueError, match="at least 161x161"):
        MSSSIMLoss()(*_pair((1, 3, 160, 200)))
    with pytest.raises(ValueError, match="at least 11x11"):
        SSIMLoss()(*_pair((1, 3, 10, 20)))
    with pytest.raises(ValueError, match="data_range=255"):
        SSIMLoss()(*_pair((1, 3, 32, 32), 255.0))
    with pytest.raises(ValueError, match="takes no mask"):
        MSSSIMLoss()(*_pair((1, 3, 176, 176)), mask=torch.ones(1, 1, 176, 176))
    with pytest.raises(ValueError, match="data_range must be a positive"):
        SSIMLoss(data_range=0)
    with pytest.raises(ValueError, match="weights must be"):
        MSSSIMLoss(weights=[0.5, -0.5])
    assert ssim(*_pair((1, 3, 16, 16))).shape == ms_ssim(*_pair((1, 3, 176, 176))).shape == (1,)


@pytest.mark.parametrize(
    ("alpha", "patch_factor", "ave_spectrum", "log_matrix", "batch_matrix"),
    list(itertools.product([1.0, 2.0], [1, 2], [False, True], [False, True], [False, True])),
)
def test_focal_frequency_equals_the_reference(
    alpha: float, patch_factor: int, ave_spectrum: bool, log_matrix: bool, batch_matrix: bool
) -> None:
    x, y = _pair((3, 3, 32, 48))
    options = {"alpha": alpha, "patch_factor": patch_factor, "ave_spectrum": ave_spectrum, "log_matrix": log_matrix,
               "batch_matrix": batch_matrix}  # fmt: skip
    ours_x, theirs_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    value = FocalFrequencyLoss(**options)(ours_x, y)
    expected = focal_frequency_loss.FocalFrequencyLoss(**options)(theirs_x, y)
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-9)
    value.backward()
    expected.backward()
    torch.testing.assert_close(ours_x.grad, theirs_x.grad, rtol=1e-5, atol=1e-5 * theirs_x.grad.abs().max().item())


def test_fft_loss_is_the_l1_of_the_spectra_parts() -> None:
    x, y = _pair((2, 3, 32, 40))
    spectrum = torch.fft.rfft2(x) - torch.fft.rfft2(y)
    expected = torch.cat([spectrum.real.abs().flatten(1), spectrum.imag.abs().flatten(1)], 1).mean(1)
    torch.testing.assert_close(FFTLoss(reduction="none")(x, y), expected)
    assert FFTLoss()(x, x).item() == 0.0
    with pytest.raises(ValueError, match="norm must be"):
        FFTLoss(norm="unitary")
    with pytest.raises(ValueError, match="patch_factor=3 must divide"):
        FocalFrequencyLoss(patch_factor=3)(x, y)


def paper_contextual(x: torch.Tensor, y: torch.Tensor, h: float = 0.5, spatial_weight: float = 0.0) -> torch.Tensor:
    """The paper's formula, written out per sample with plain loops (no blocks, no softmax)."""
    values = []
    for xs, ys in zip(x.double(), y.double()):
        mu = ys.mean(dim=(1, 2), keepdim=True)
        xv, yv = (xs - mu).flatten(1), (ys - mu).flatten(1)
        xv, yv = xv / xv.norm(dim=0, keepdim=True), yv / yv.norm(dim=0, keepdim=True)
        d = 1 - xv.T @ yv  # (I, J)
        d_rel = d / (d.min(dim=1, keepdim=True).values + 1e-5)
        w = torch.exp((1 - d_rel) / h)
        cx = w / w.sum(dim=1, keepdim=True)
        if spatial_weight:
            rows, cols = xs.shape[1:]
            grid = torch.stack(
                torch.meshgrid(torch.arange(rows) / (rows + 1), torch.arange(cols) / (cols + 1), indexing="ij")
            )
            g = grid.reshape(2, -1).double()
            sq = ((g[:, :, None] - g[:, None, :]) ** 2).sum(0)
            sq_rel = sq / (sq.min(dim=1, keepdim=True).values + 1e-5)
            ws = torch.exp((1 - sq_rel) / h)
            cx = (1 - spatial_weight) * cx + spatial_weight * ws / ws.sum(dim=1, keepdim=True)
            similarity = cx.max(dim=1).values.mean()
        else:
            similarity = cx.max(dim=0).values.mean()
        values.append(-torch.log((similarity + 1e-5) / (1 + 1e-5)))
    return torch.stack(values).float()


@pytest.mark.parametrize("spatial_weight", [0.0, 0.1])
def test_contextual_equals_the_paper_formula_in_blocks_or_whole(spatial_weight: float) -> None:
    generator = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 8, 5, 7, generator=generator), torch.randn(2, 8, 5, 7, generator=generator)
    expected = paper_contextual(x, y, spatial_weight=spatial_weight)
    for block in (4, 35, 1024):
        value = contextual_distance({"t": x}, {"t": y}, {"t": 1.0}, spatial_weight=spatial_weight, block=block)
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)


def test_contextual_ignores_the_targets_layout_and_grows_with_a_difference() -> None:
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(1, 16, 6, 6, generator=generator)
    y = torch.randn(1, 16, 6, 6, generator=generator)
    permuted = y.flatten(2)[:, :, torch.randperm(36, generator=generator)].reshape(1, 16, 6, 6)
    value = contextual_distance({"t": x}, {"t": y}, {"t": 1.0})
    torch.testing.assert_close(contextual_distance({"t": x}, {"t": permuted}, {"t": 1.0}), value, rtol=1e-6, atol=1e-7)
    assert contextual_distance({"t": x}, {"t": x}, {"t": 1.0}).abs().item() < 1e-5
    noise = torch.randn(1, 16, 6, 6, generator=generator)
    values = [contextual_distance({"t": x}, {"t": x + level * noise}, {"t": 1.0}).item() for level in (0.5, 1.0, 3.0)]
    assert 1e-3 < values[0] < values[1] < values[2], values


def test_contextual_loss_on_vgg_features_with_unaligned_targets() -> None:
    loss = ContextualLoss(["relu2_2", "relu3_4"])
    x, y = _pair((2, 3, 48, 48))
    pred = x.clone().requires_grad_()
    value = loss(pred, y)
    value.backward()
    assert value.item() > 0 and pred.grad is not None and torch.isfinite(pred.grad).all()
    assert loss(x, x).item() < 1e-4
    shifted = torch.roll(y, shifts=(5, 7), dims=(2, 3))  # the same content, moved
    assert ContextualLoss(["relu2_2"], reduction="none")(y, torch.rand(2, 3, 40, 56)).shape == (2,)
    assert loss(y, shifted).item() < loss(y, torch.rand(2, 3, 48, 48)).item()
    with pytest.raises(ValueError, match="takes no mask"):
        loss(x, y, mask=torch.ones(1, 1, 48, 48))
    with pytest.raises(ValueError, match="one size"):
        ContextualLoss(["relu2_2"], spatial_weight=0.1)(x, torch.rand(2, 3, 40, 56))
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        ContextualComparison(bandwidth=0)


def test_the_criterion_takes_every_restoration_term() -> None:
    from perceptual_loss import CombinedLoss, PerceptualLoss

    x, y = _pair((2, 3, 176, 176))
    criterion = CombinedLoss(
        l1=0.16, ms_ssim=0.84, ssim={"weight": 0.5, "win_size": 7}, fft=0.1, focal_frequency={"weight": 2.0, "alpha": 2.0},
        perceptual={"layers": ["relu2_2"], "backbone": "vgg19", "weight": 0.1},
        contextual={"layers": ["relu3_4"], "weight": 0.2},
    )  # fmt: skip
    pred = x.clone().requires_grad_()
    total, parts = criterion(pred, y)
    total.backward()
    assert len(criterion.extractors) == 1, "contextual shares VGG19's pass with the perceptual term"
    expected = {
        "l1": (x - y).abs().mean(),
        "ms_ssim": MSSSIMLoss()(x, y),
        "ssim": SSIMLoss(win_size=7)(x, y),
        "fft": FFTLoss()(x, y),
        "focal_frequency": FocalFrequencyLoss(alpha=2.0)(x, y),
        "perceptual": PerceptualLoss(["relu2_2"], backbone="vgg19")(x, y),
        "contextual": ContextualLoss(["relu3_4"])(x, y),
    }
    assert parts.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(parts[name], value, rtol=1e-5, atol=1e-7, msg=name)
    weights = {
        "l1": 0.16,
        "ms_ssim": 0.84,
        "ssim": 0.5,
        "fft": 0.1,
        "focal_frequency": 2.0,
        "perceptual": 0.1,
        "contextual": 0.2,
    }
    torch.testing.assert_close(total.detach(), sum(weights[k] * parts[k] for k in weights))
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_criterion_ssim_reads_the_input_range_and_refuses_masks_where_meaningless() -> None:
    from perceptual_loss import CombinedLoss

    x, y = _pair((2, 3, 32, 32))
    signed = CombinedLoss(ssim=1.0, input_range=(-1, 1))(2 * x - 1, 2 * y - 1)
    torch.testing.assert_close(signed.total, SSIMLoss()(x, y))
    mask = torch.ones(1, 1, 32, 32)
    torch.testing.assert_close(CombinedLoss(ssim=1.0)(x, y, mask=mask).total, SSIMLoss()(x, y))
    with pytest.raises(ValueError, match="fft term takes no mask"):
        CombinedLoss(fft=1.0)(x, y, mask=mask)
    with pytest.raises(TypeError, match="ave_spectrum and batch_matrix mix the samples"):
        CombinedLoss(focal_frequency={"ave_spectrum": True})
    with pytest.raises(ValueError, match="weight must be finite"):
        CombinedLoss(ssim=-1.0)
