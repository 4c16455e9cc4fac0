"""How perceptual terms compare: pure functions of feature dicts, no network inside.

Every loss in the library is "what it looks at" (a :class:`~perceptual_loss.FeatureExtractor`)
plus one of these comparisons, so a criterion that runs a backbone once can hand the same features
to several comparisons. Values that can overflow or lose precision in half precision (Gram
matrices, channel norms, means) are computed in float32 (float64 stays float64), with autocast off.

Shapes: a feature dict is ``{tap: (N, C, H, W)}``; results are ``(N,)`` (one value per sample) or
``(N, 1, H, W)`` for the spatial LPIPS map.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

Distance = Literal["l1", "l2"]
DISTANCES = ("l1", "l2")

LPIPS_EPS = 1e-10
"""Added to the squared channel norm *inside* the square root (see :func:`normalize_channels`)."""


def _float(x: Tensor) -> Tensor:
    """``x`` in at least float32 (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _elementwise(diff: Tensor, distance: Distance) -> Tensor:
    if distance == "l1":
        return diff.abs()
    if distance == "l2":
        return diff.square()
    raise ValueError(f"Unknown distance {distance!r}; choose one of {DISTANCES}.")


def feature_distance(
    pred: Mapping[str, Tensor], target: Mapping[str, Tensor], layer_weights: Mapping[str, float], distance: Distance = "l1"
) -> Tensor:
    """Weighted feature-reconstruction distance (Johnson et al., 2016).

    ``sum_l w_l * mean_{c,h,w} |phi_l(pred) - phi_l(target)|`` for ``l1``, squared for ``l2``.

    Args:
        pred, target: ``{tap: (N, C, H, W)}`` with equal shapes per tap.
        layer_weights: ``{tap: weight}``.
        distance: ``"l1"`` (mean absolute) | ``"l2"`` (mean squared).

    Returns:
        ``(N,)``, one value per sample.
    """
    total: Optional[Tensor] = None
    for name, weight in layer_weights.items():
        diff = _float(pred[name]) - _float(target[name])
        value = weight * _elementwise(diff, distance).flatten(1).mean(1)
        total = value if total is None else total + value
    assert total is not None, "layer_weights is empty"
    return total


def gram_matrix(features: Tensor) -> Tensor:
    """Normalised Gram matrix ``F F^T / (C * H * W)`` of ``(N, C, H, W)`` features -> ``(N, C, C)``.

    Always computed in float32 (or float64), with autocast off, so fp16 features cannot overflow.
    """
    n, c, h, w = features.shape
    flat = _float(features).reshape(n, c, h * w)
    with torch.autocast(device_type=features.device.type, enabled=False):
        return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def gram_matrices(features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """:func:`gram_matrix` of each tap: ``{tap: (N, C, C)}``."""
    return {name: gram_matrix(f) for name, f in features.items()}


def style_distance(
    pred: Mapping[str, Tensor], target_grams: Mapping[str, Tensor], layer_weights: Mapping[str, float], distance: Distance = "l2"
) -> Tensor:
    """Weighted Gram-matrix (style) distance (Gatys et al., 2016).

    ``sum_l w_l * mean_{i,j} (G_l(pred) - G_l(target))_{ij}^2`` for ``l2``, absolute for ``l1``.

    Args:
        pred: ``{tap: (N, C, H, W)}`` features of the prediction.
        target_grams: ``{tap: (N or 1, C, C)}``, from :func:`gram_matrices` of the target (its
            spatial size may differ from the prediction's; batch 1 is broadcast).
        layer_weights: ``{tap: weight}``.

    Returns:
        ``(N,)``, one value per sample.
    """
    total: Optional[Tensor] = None
    for name, weight in layer_weights.items():
        diff = gram_matrix(pred[name]) - target_grams[name]
        value = weight * _elementwise(diff, distance).flatten(1).mean(1)
        total = value if total is None else total + value
    assert total is not None, "layer_weights is empty"
    return total


def normalize_channels(features: Tensor, eps: float = LPIPS_EPS) -> Tensor:
    """Unit-normalise each feature vector across channels: ``f / sqrt(sum_c f^2 + eps)``.

    ``eps`` is inside the square root, so an all-zero feature vector (common after a ReLU) gives 0
    with a finite gradient; the ``lpips`` package's ``f / (sqrt(sum f^2) + eps)`` gives NaN there.
    For any vector whose norm is not tiny the two agree to float precision.

    Shape: ``(N, C, H, W)`` -> ``(N, C, H, W)`` in float32 (float64 stays float64).
    """
    f = _float(features)
    return f * torch.rsqrt(f.square().sum(dim=1, keepdim=True) + eps)


def lpips_distance(
    pred_normalized: Mapping[str, Tensor],
    target_normalized: Mapping[str, Tensor],
    heads: Mapping[str, Tensor],
    spatial_size: Optional[tuple[int, int]] = None,
) -> Tensor:
    """LPIPS (Zhang et al., 2018) from channel-normalised features and linear heads.

    ``sum_l mean_{h,w} (w_l . (n_l(pred) - n_l(target))^2)``, where ``n_l`` is
    :func:`normalize_channels` and ``w_l`` a non-negative ``(1, C_l, 1, 1)`` 1x1 convolution.

    Args:
        pred_normalized, target_normalized: ``{tap: (N, C, H, W)}`` from :func:`normalize_channels`.
        heads: ``{tap: (1, C, 1, 1)}`` linear-head weights.
        spatial_size: ``(H, W)`` of the input images for the spatial map; ``None`` for one value
            per sample.

    Returns:
        ``(N,)``, or ``(N, 1, H, W)`` (each layer's map upsampled bilinearly) with ``spatial_size``.
    """
    total: Optional[Tensor] = None
    for name, head in heads.items():
        diff = (pred_normalized[name] - target_normalized[name]).square()
        with torch.autocast(device_type=diff.device.type, enabled=False):
            weighted = F.conv2d(diff, head.to(diff.dtype))
        if spatial_size is None:
            value = weighted.mean(dim=(1, 2, 3))
        else:
            value = F.interpolate(weighted, size=spatial_size, mode="bilinear", align_corners=False)
        total = value if total is None else total + value
    assert total is not None, "heads is empty"
    return total
