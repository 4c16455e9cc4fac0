"""Masks at each tap's resolution, mask-weighted means, and maps spread back over the image's pixels."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import _float


def area_upsample(values: Tensor, size: tuple[int, int]) -> Tensor:
    """``(N, C, h, w) -> (N, C, H, W)``: each value spread over the pixels its cell stands for.

    The transpose of area averaging (``adaptive_avg_pool2d``) scaled by ``H W / (h w)``: the
    mean over the image is preserved exactly, for any sizes (nearest-neighbour when ``h`` divides
    ``H``; overlapping cells share the pixels between them otherwise).
    """
    height, width = values.shape[-2:]
    if (height, width) == tuple(size):
        return values
    like = values.new_empty(values.shape[0], values.shape[1], size[0], size[1])
    spread = torch.ops.aten._adaptive_avg_pool2d_backward(values.contiguous(), like)
    return spread * (size[0] * size[1] / (height * width))


MASK_EPS = 1e-12
"""Floor of a mask's sum in a weighted mean: an empty mask gives 0, never NaN."""


def masks_at(mask: Tensor, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A ``(N or 1, 1, H, W)`` mask brought to each tap's resolution by area averaging.

    Each feature position gets the mean of the mask over the pixels it stands for
    (``adaptive_avg_pool2d``, exact for any size). Taps of one size share one pooled mask.

    Raises:
        ValueError: a tap is not a spatial map (logits, tokens): a mask cannot apply to it.
    """
    pooled: dict[tuple[int, int], Tensor] = {}
    out: dict[str, Tensor] = {}
    for name, f in features.items():
        if f.dim() != 4:
            raise ValueError(f"mask= needs spatial feature maps, but tap {name!r} is {f.dim()}-D (logits or tokens).")
        size = (f.shape[-2], f.shape[-1])
        if size not in pooled:
            pooled[size] = mask if tuple(mask.shape[-2:]) == size else F.adaptive_avg_pool2d(mask, size)
        out[name] = pooled[size]
    return out


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """``sum(mask * values) / (C * sum(mask))`` per sample: ``(N, C, H, W), (N or 1, 1, H, W)`` -> ``(N,)``."""
    weights = _float(mask)
    total = (values * weights).sum(dim=(1, 2, 3))
    return total / (weights.sum(dim=(1, 2, 3)) * values.shape[1]).clamp_min(MASK_EPS)
