"""Pixel-space terms: L1, L2, Charbonnier and total variation, one value per sample.

All take ``(N, C, H, W)`` tensors and return ``(N,)`` (means over ``C, H, W``), computed in at
least float32 so that half-precision inputs lose nothing in the mean. Each takes an optional
``(N or 1, 1, H, W)`` ``mask`` of weights in ``[0, 1]``: the mean over positions becomes the
mask-weighted mean (0 for an empty mask).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from .distances import masked_mean

PixelDistance = Literal["l1", "l2", "charbonnier"]


def _diff(pred: Tensor, target: Tensor) -> Tensor:
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    return pred.to(dtype) - target.to(dtype)


def _mean(values: Tensor, mask: Tensor | None) -> Tensor:
    return values.mean(dim=(1, 2, 3)) if mask is None else masked_mean(values, mask)


def l1_distance(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean absolute difference per sample: ``(N, C, H, W) x2 -> (N,)``."""
    return _mean(_diff(pred, target).abs(), mask)


def l2_distance(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared difference per sample: ``(N, C, H, W) x2 -> (N,)``."""
    return _mean(_diff(pred, target).square(), mask)


def charbonnier_distance(pred: Tensor, target: Tensor, eps: float = 1e-3, mask: Tensor | None = None) -> Tensor:
    """Charbonnier (smooth L1) ``mean sqrt((pred - target)^2 + eps^2)`` per sample -> ``(N,)``.

    ``eps`` is inside the square root, so the gradient is finite at ``pred == target``.
    """
    return _mean((_diff(pred, target).square() + eps * eps).sqrt(), mask)


def total_variation(images: Tensor, mask: Tensor | None = None) -> Tensor:
    """Anisotropic total variation ``mean |dx| + mean |dy|`` per sample: ``(N, C, H, W) -> (N,)``.

    Needs ``H, W >= 2``. With a mask, a neighbour difference weighs the product of its two
    pixels' mask values (only differences inside the region count).
    """
    x = images.to(torch.promote_types(images.dtype, torch.float32))
    dy, dx = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs(), (x[:, :, :, 1:] - x[:, :, :, :-1]).abs()
    if mask is None:
        return dx.mean(dim=(1, 2, 3)) + dy.mean(dim=(1, 2, 3))
    return masked_mean(dx, mask[:, :, :, 1:] * mask[:, :, :, :-1]) + masked_mean(
        dy, mask[:, :, 1:, :] * mask[:, :, :-1, :]
    )


PIXEL_DISTANCES: dict[str, Callable[..., Tensor]] = {
    "l1": l1_distance,
    "l2": l2_distance,
    "charbonnier": charbonnier_distance,
}
