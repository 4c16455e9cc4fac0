"""What the comparisons share: the distance names, float32 arithmetic, channel norms."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Distance = Literal["l1", "l2", "normalized_l2", "fro"]
DISTANCES = ("l1", "l2", "normalized_l2", "fro")
"""Feature distances: mean absolute, mean squared, squared distance of channel-normalised feature
vectors summed over channels (LPIPS without its learned heads; MONAI's perceptual loss), and the
Frobenius norm of the difference per sample (BasicSR's ``criterion: fro``)."""
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


def _is_channels_last(x: Tensor) -> bool:
    """True when the channels are the innermost dimension (``channels_last``), C > 1."""
    return x.dim() == 4 and x.stride(1) == 1 and x.shape[1] > 1


def _channel_sum_of_squares(x: Tensor) -> Tensor:
    """``sum_c x_c^2``: ``(N, C, H, W)`` -> ``(N, 1, H, W)``, one reduction kernel in either layout."""
    if _is_channels_last(x):
        return torch.linalg.vector_norm(x, dim=1, keepdim=True).square()
    return torch.linalg.vecdot(x, x, dim=1).unsqueeze(1)


def _weighted_channel_sum(x: Tensor, weight: Tensor) -> Tensor:
    """``sum_c weight_c x_c`` as one matrix-vector product: ``(N, C, H, W), (C,)`` -> ``(N, 1, H, W)``."""
    n, c, h, w = x.shape
    if _is_channels_last(x):
        return torch.matmul(x.permute(0, 2, 3, 1), weight).unsqueeze(1)
    return torch.matmul(weight.view(1, c), x.reshape(n, c, h * w)).view(n, 1, h, w)


def normalize_channels(features: Tensor, eps: float = LPIPS_EPS) -> Tensor:
    """Unit-normalise each feature vector across channels: ``f / sqrt(sum_c f^2 + eps)``.

    ``eps`` is inside the square root, so an all-zero feature vector (common after a ReLU) gives 0
    with a finite gradient; the ``lpips`` package's ``f / (sqrt(sum f^2) + eps)`` gives NaN there.
    For any vector whose norm is not tiny the two agree to float precision.

    Shape: ``(N, C, H, W)`` -> ``(N, C, H, W)`` in float32 (float64 stays float64), in the
    memory format of ``features``.
    """
    f = _float(features)
    return f * torch.rsqrt(_channel_sum_of_squares(f) + eps)
