"""Feature distances (L1, L2, normalised L2, Frobenius) and their per-pixel maps: the perceptual loss's comparison."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._common import Distance, _elementwise, _float, normalize_channels
from .masks import MASK_EPS, area_upsample, masked_mean


def feature_distance(
    pred: Mapping[str, Tensor],
    target: Mapping[str, Tensor],
    layer_weights: Mapping[str, float],
    distance: Distance = "l1",
    masks: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Weighted feature-reconstruction distance (Johnson et al., 2016).

    ``sum_l w_l * mean_{c,h,w} |phi_l(pred) - phi_l(target)|`` for ``l1``, squared for ``l2``;
    ``sum_l w_l * mean_{h,w} sum_c (n(phi_l(pred)) - n(phi_l(target)))_c^2`` for
    ``normalized_l2``, ``n`` being :func:`normalize_channels` (features on dim 1);
    ``sum_l w_l * ||phi_l(pred) - phi_l(target)||_F`` per sample for ``fro`` (a norm, not a mean:
    it grows with the feature map's size). With ``masks``, each mean over positions is the
    mask-weighted mean ``sum(m d) / sum(m)``; for ``fro`` the norm is ``sqrt(sum m d^2)``.

    Args:
        pred, target: ``{tap: (N, C, H, W)}`` with equal shapes per tap (``(N, C)`` logits and
            ``(N, L, C)`` tokens too: the mean is over every dimension but the batch).
        layer_weights: ``{tap: weight}``.
        distance: ``"l1"`` (mean absolute) | ``"l2"`` (mean squared) | ``"normalized_l2"`` |
            ``"fro"`` (Frobenius norm per sample; its gradient at a zero difference is 0).
        masks: ``{tap: (N or 1, 1, H, W)}`` weights at each tap's resolution (see
            :func:`masks_at`), or ``None``.

    Returns:
        ``(N,)``, one value per sample (0 where a sample's mask is empty).
    """
    total: Tensor | None = None
    for name, weight in layer_weights.items():
        mask = None if masks is None else masks[name]
        if distance == "normalized_l2":
            p, t = _float(pred[name]), _float(target[name])
            per_position = (normalize_channels(p) - normalize_channels(t)).square().sum(dim=1, keepdim=True)
            value = weight * (
                masked_mean(per_position, mask)
                if mask is not None
                else per_position.mean(dim=tuple(range(1, per_position.dim())))
            )
        elif distance == "fro":
            diff = _float(pred[name]) - _float(target[name])
            if mask is not None:
                diff = diff * mask.sqrt()  # ||sqrt(m) d|| = sqrt(sum m d^2)
            # vector_norm, not sqrt(sum + eps): exact, and its gradient at a zero difference is 0.
            value = weight * torch.linalg.vector_norm(diff.flatten(1), dim=1)
        else:
            value = weight * _MeanDistance.apply(pred[name], target[name], distance == "l2", mask)
        total = value if total is None else total + value
    assert total is not None, "layer_weights is empty"
    return total


def feature_distance_map(
    pred: Mapping[str, Tensor],
    target: Mapping[str, Tensor],
    layer_weights: Mapping[str, float],
    distance: Distance,
    size: tuple[int, int],
) -> Tensor:
    """Where :func:`feature_distance` comes from: a ``(N, 1, H, W)`` map at the image size.

    Each tap's per-position value (the mean over channels of ``|d|`` or ``d^2``, or the sum for
    ``normalized_l2``) is spread over the pixels it stands for by :func:`area_upsample`, so
    the map's mean over the image equals :func:`feature_distance` exactly, for any ``H, W``.
    """
    total: Tensor | None = None
    for name, weight in layer_weights.items():
        p, t = _float(pred[name]), _float(target[name])
        if p.dim() != 4:
            raise ValueError(
                f"spatial=True needs spatial feature maps, but tap {name!r} is {p.dim()}-D (logits or tokens)."
            )
        if distance == "normalized_l2":
            per_position = (normalize_channels(p) - normalize_channels(t)).square().sum(dim=1, keepdim=True)
        else:
            per_position = _elementwise(p - t, distance).mean(dim=1, keepdim=True)
        value = weight * area_upsample(per_position, size)
        total = value if total is None else total + value
    assert total is not None, "layer_weights is empty"
    return total


class _MeanDistance(torch.autograd.Function):
    """``mean |p - t|`` or ``mean (p - t)^2`` over all but the batch dimension, in at least float32;
    with a mask, the mask-weighted mean over positions (and the plain mean over channels).

    Autograd's own backward of ``(p - t).abs().mean(dims)`` returns the gradient in the default
    (NCHW) layout whatever the features' layout, and the backbone's channels_last backward then
    pays a layout conversion in every op that meets it (about 4% of a ResNet-50 step with four
    taps); it also keeps ``p - t`` in float for backward. Here the gradient is one product in the
    features' own layout, and the L1 backward keeps only the difference's sign, as int8.
    """

    @staticmethod
    def forward(ctx, pred: Tensor, target: Tensor, squared: bool, mask: Tensor | None) -> Tensor:  # type: ignore[override]
        diff = _float(pred) - _float(target)
        dims = tuple(range(1, diff.dim()))
        ctx.squared, ctx.dtypes = squared, (pred.dtype, target.dtype)
        saved = diff if squared else (diff > 0).view(torch.int8) - (diff < 0).view(torch.int8)
        values = diff.square() if squared else diff.abs_()
        if mask is None:
            ctx.denominator, weights = float(math.prod(diff.shape[1:])), None
            ctx.save_for_backward(saved)
            return values.mean(dim=dims)
        weights = _float(mask)
        denominator = (weights.sum(dim=dims) * diff.shape[1]).clamp_min(MASK_EPS)
        ctx.denominator = None
        ctx.save_for_backward(saved, weights, denominator)
        return (values * weights).sum(dim=dims) / denominator

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_value: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:  # type: ignore[override]
        saved, *weighted = ctx.saved_tensors
        denominator = ctx.denominator if not weighted else weighted[1]
        scale = (grad_value * (2.0 if ctx.squared else 1.0) / denominator).view(-1, *[1] * (saved.dim() - 1))
        grad = torch.mul(saved, scale if not weighted else scale * weighted[0])
        grad_pred = grad.to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None
        grad_target = grad.neg().to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
        return grad_pred, grad_target, None, None
