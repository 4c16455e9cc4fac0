"""LPIPS' comparison (Zhang et al. 2018): channel-normalised features, squared difference, linear heads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._common import LPIPS_EPS, _channel_sum_of_squares, _float, _weighted_channel_sum
from .masks import area_upsample, masked_mean


class _LPIPSLayer(torch.autograd.Function):
    """One LPIPS layer, ``sum_c w_c (n(f)_c - t_c)^2`` per pixel, saving only ``f``, ``t`` and the norms.

    The backbone already keeps ``f`` (a ReLU output) for its own backward, so the normalised
    features and their difference are recomputed in backward instead of stored: autograd's
    version of this would keep two more feature-sized tensors per layer. Forward and backward
    are written as few passes over the feature maps as eager PyTorch allows (in-place updates of
    one temporary, single-kernel channel reductions, the head as one matrix-vector product): on
    CPU these memory-bound passes, not the arithmetic, cost the time.
    """

    @staticmethod
    def forward(ctx, features: Tensor, target: Tensor, head: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        f = _float(features)
        inv_norm = torch.rsqrt(_channel_sum_of_squares(f) + eps)
        with torch.autocast(device_type=f.device.type, enabled=False):
            # (n(f) - t)^2 with the product rounded first (no fused multiply-add), so that
            # n(f) - t is exactly 0 where the target is normalize_channels of the same features.
            squared = torch.mul(f, inv_norm).sub_(target).square_()
            value = _weighted_channel_sum(squared, head.to(f.dtype).flatten())
        ctx.save_for_backward(features, target, head, inv_norm)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_value: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:  # type: ignore[override]
        features, target, head, inv_norm = ctx.saved_tensors
        f = _float(features)
        # e = w (n - t) with n = f * inv_norm;  value = sum_c w (n - t)^2 per pixel, so
        # d value / d n = 2 e  and  d value / d t = -2 e.
        weighted = torch.mul(f, inv_norm).sub_(target).mul_(head.to(f.dtype).view(1, -1, 1, 1))
        grad_target = -2 * weighted * grad_value if ctx.needs_input_grad[1] else None
        grad_features = None
        if ctx.needs_input_grad[0]:
            # n = f / sqrt(|f|^2 + eps):  dL/df = (g - n <n, g>) / sqrt(|f|^2 + eps)  with g = 2 e grad
            #   = 2 grad inv_norm e - 2 grad inv_norm^3 <f, e> f
            scale = (2 * grad_value) * inv_norm
            along_f = (-scale) * inv_norm.square() * torch.linalg.vecdot(weighted, f, dim=1).unsqueeze(1)
            grad_features = weighted.mul_(scale).addcmul_(f, along_f).to(features.dtype)
        return grad_features, grad_target, None, None


def lpips_distance(
    pred: Mapping[str, Tensor],
    target_normalized: Mapping[str, Tensor],
    heads: Mapping[str, Tensor],
    spatial_size: tuple[int, int] | None = None,
    eps: float = LPIPS_EPS,
    masks: Mapping[str, Tensor] | None = None,
    upsample: Literal["area", "bilinear"] = "area",
) -> Tensor:
    """LPIPS (Zhang et al., 2018) from raw prediction features and normalised target features.

    ``sum_l mean_{h,w} (w_l . (n_l(pred) - n_l(target))^2)``, where ``n_l`` is
    :func:`normalize_channels` and ``w_l`` a non-negative ``(1, C_l, 1, 1)`` 1x1 convolution.
    The prediction side is normalised here, inside a custom autograd function that recomputes the
    normalisation in backward rather than storing it (less memory, same gradients).

    Args:
        pred: ``{tap: (N, C, H, W)}`` raw features of the prediction.
        target_normalized: ``{tap: (N, C, H, W)}`` from :func:`normalize_channels` of the target.
        heads: ``{tap: (1, C, 1, 1)}`` linear-head weights.
        spatial_size: ``(H, W)`` of the input images for the spatial map; ``None`` for one value
            per sample.
        eps: added to the squared norm inside the square root (see :func:`normalize_channels`).
        masks: ``{tap: (N or 1, 1, H, W)}``: each layer's mean over positions becomes the
            mask-weighted mean (not with ``spatial_size``: weight the map itself).
        upsample: how each layer's map reaches ``spatial_size``: ``"area"`` (each value spread
            over the pixels it stands for: the map's mean is the scalar LPIPS exactly, any size)
            or ``"bilinear"`` (the ``lpips`` package's map, whose mean is not).

    Returns:
        ``(N,)``, or ``(N, 1, H, W)`` with ``spatial_size`` (see ``upsample``).
    """
    total: Tensor | None = None
    for name, head in heads.items():
        target = target_normalized[name]
        weighted = _LPIPSLayer.apply(pred[name], _float(target), head, eps)
        if masks is not None:
            value = masked_mean(weighted, masks[name])
        elif spatial_size is None:
            value = weighted.mean(dim=(1, 2, 3))
        else:
            value = (
                area_upsample(weighted, spatial_size)
                if upsample == "area"
                else F.interpolate(weighted, size=spatial_size, mode="bilinear", align_corners=False)
            )
        total = value if total is None else total + value
    assert total is not None, "heads is empty"
    return total
