"""channels="each": any channel count, each channel scored as a grayscale image, values averaged over channels."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from perceptual_loss import CombinedLoss, DISTSLoss, LPIPSLoss, PerceptualLoss, StyleLoss

LOSSES: list[tuple[type, dict[str, Any]]] = [
    (PerceptualLoss, {"layers": ["relu1_2", "relu2_2"]}),
    (LPIPSLoss, {"net": "squeeze"}),
    (StyleLoss, {"layers": ["relu1_2"]}),
    (DISTSLoss, {}),
]


def _pair(channels: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(2, channels, 32, 32, generator=generator), torch.rand(2, channels, 32, 32, generator=generator)


@pytest.mark.parametrize("channels", [2, 4])
@pytest.mark.parametrize(("loss", "kwargs"), LOSSES, ids=[loss.__name__ for loss, _ in LOSSES])
def test_each_channel_is_a_grayscale_image_averaged(loss: type, kwargs: dict[str, Any], channels: int) -> None:
    pred, target = _pair(channels)
    gray = loss(**kwargs, grayscale="repeat", reduction="none")  # the hub cache's trunk: same weights
    expected = torch.stack([gray(pred[:, [c]], target[:, [c]]) for c in range(channels)], dim=1).mean(dim=1)
    for reduction, reduce in (("none", lambda v: v), ("mean", torch.mean), ("sum", torch.sum)):
        value = loss(**kwargs, channels="each", reduction=reduction)(pred, target)
        torch.testing.assert_close(value, reduce(expected), rtol=1e-5, atol=1e-7)


def test_each_channel_with_a_mask_and_gradients() -> None:
    pred, target = _pair(4)
    pred.requires_grad_()
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :16] = 1
    loss = PerceptualLoss(["relu2_2"], channels="each", reduction="none")
    gray = PerceptualLoss(["relu2_2"], grayscale="repeat", reduction="none")
    value = loss(pred, target, mask=mask)
    expected = torch.stack([gray(pred[:, [c]], target[:, [c]], mask=mask) for c in range(4)], 1).mean(1)
    torch.testing.assert_close(value, expected)
    value.sum().backward()
    assert pred.grad is not None and (pred.grad[..., :16].abs().sum(dim=(0, 2, 3)) > 0).all()


def test_criterion_takes_channels_each() -> None:
    pred, target = _pair(5)
    criterion = CombinedLoss(l1=1.0, perceptual={"layers": ["relu2_2"], "weight": 0.1}, channels="each")
    total, parts = criterion(pred, target)
    torch.testing.assert_close(parts["l1"], (pred - target).abs().mean())
    torch.testing.assert_close(parts["perceptual"], PerceptualLoss(["relu2_2"], channels="each")(pred, target))
    torch.testing.assert_close(total, parts["l1"] + 0.1 * parts["perceptual"])


def test_channel_errors_name_the_fix() -> None:
    loss = PerceptualLoss(["relu1_2"])
    with pytest.raises(ValueError, match=r"RGBA: drop alpha with x\[:, :3\]"):
        loss(*_pair(4))
    with pytest.raises(ValueError, match="channels='each'"):
        loss(*_pair(2))
    with pytest.raises(ValueError, match="grayscale='repeat'"):
        loss(*_pair(1))
    with pytest.raises(ValueError, match="channels must be None or 'each'"):
        PerceptualLoss(["relu1_2"], channels="all")
    with pytest.raises(ValueError, match="same channels"):
        PerceptualLoss(["relu1_2"], channels="each")(_pair(2)[0], _pair(3)[1])
