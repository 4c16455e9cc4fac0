"""Pixel-space terms: L1, L2, Charbonnier and total variation, one value per sample.

All take ``(N, C, H, W)`` tensors and return ``(N,)`` (means over ``C, H, W``), computed in at
least float32 so that half-precision inputs lose nothing in the mean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

PixelDistance = Literal["l1", "l2", "charbonnier"]


def _diff(pred: Tensor, target: Tensor) -> Tensor:
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    return pred.to(dtype) - target.to(dtype)


def l1_distance(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute difference per sample: ``(N, C, H, W) x2 -> (N,)``."""
    return _diff(pred, target).abs().mean(dim=(1, 2, 3))


def l2_distance(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared difference per sample: ``(N, C, H, W) x2 -> (N,)``."""
    return _diff(pred, target).square().mean(dim=(1, 2, 3))


def charbonnier_distance(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Charbonnier (smooth L1) ``mean sqrt((pred - target)^2 + eps^2)`` per sample -> ``(N,)``.

    ``eps`` is inside the square root, so the gradient is finite at ``pred == target``.
    """
    return (_diff(pred, target).square() + eps * eps).sqrt().mean(dim=(1, 2, 3))


def total_variation(images: Tensor) -> Tensor:
    """Anisotropic total variation ``mean |dx| + mean |dy|`` per sample: ``(N, C, H, W) -> (N,)``.

    Needs ``H, W >= 2``.
    """
    x = images.to(torch.promote_types(images.dtype, torch.float32))
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean(dim=(1, 2, 3))
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean(dim=(1, 2, 3))
    return dx + dy


PIXEL_DISTANCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "l1": l1_distance,
    "l2": l2_distance,
    "charbonnier": charbonnier_distance,
}
