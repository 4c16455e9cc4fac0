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
from contextlib import nullcontext
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

Distance = Literal["l1", "l2", "normalized_l2"]
DISTANCES = ("l1", "l2", "normalized_l2")
"""Feature distances: mean absolute, mean squared, and squared distance of channel-normalised
feature vectors summed over channels (LPIPS without its learned heads; MONAI's perceptual loss)."""
GRAM_DISTANCES = ("l1", "l2")

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

    ``sum_l w_l * mean_{c,h,w} |phi_l(pred) - phi_l(target)|`` for ``l1``, squared for ``l2``;
    ``sum_l w_l * mean_{h,w} sum_c (n(phi_l(pred)) - n(phi_l(target)))_c^2`` for
    ``normalized_l2``, ``n`` being :func:`normalize_channels` (features on dim 1).

    Args:
        pred, target: ``{tap: (N, C, H, W)}`` with equal shapes per tap (``(N, C)`` logits and
            ``(N, L, C)`` tokens too: the mean is over every dimension but the batch).
        layer_weights: ``{tap: weight}``.
        distance: ``"l1"`` (mean absolute) | ``"l2"`` (mean squared) | ``"normalized_l2"``.

    Returns:
        ``(N,)``, one value per sample.
    """
    total: Optional[Tensor] = None
    for name, weight in layer_weights.items():
        p, t = _float(pred[name]), _float(target[name])
        if distance == "normalized_l2":
            per_position = (normalize_channels(p) - normalize_channels(t)).square().sum(dim=1, keepdim=True)
            value = weight * per_position.mean(dim=tuple(range(1, per_position.dim())))
        else:
            value = weight * _MeanDistance.apply(pred[name], target[name], distance == "l2")
        total = value if total is None else total + value
    assert total is not None, "layer_weights is empty"
    return total


class _MeanDistance(torch.autograd.Function):
    """``mean |p - t|`` or ``mean (p - t)^2`` over all but the batch dimension, in at least float32.

    Autograd's own backward of ``(p - t).abs().mean(dims)`` returns the gradient in the default
    (NCHW) layout whatever the features' layout, and the backbone's channels_last backward then
    pays a layout conversion in every op that meets it (about 4% of a ResNet-50 step with four
    taps); it also keeps ``p - t`` in float for backward. Here the gradient is one product in the
    features' own layout, and the L1 backward keeps only the difference's sign, as int8.
    """

    @staticmethod
    def forward(ctx, pred: Tensor, target: Tensor, squared: bool) -> Tensor:  # type: ignore[override]
        diff = _float(pred) - _float(target)
        dims = tuple(range(1, diff.dim()))
        ctx.per_sample, ctx.squared, ctx.dtypes = diff[0].numel(), squared, (pred.dtype, target.dtype)
        if squared:
            ctx.save_for_backward(diff)
            return diff.square().mean(dim=dims)
        ctx.save_for_backward((diff > 0).view(torch.int8) - (diff < 0).view(torch.int8))
        return diff.abs_().mean(dim=dims)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_value: Tensor) -> tuple[Optional[Tensor], Optional[Tensor], None]:  # type: ignore[override]
        (saved,) = ctx.saved_tensors
        scale = (grad_value * (2.0 if ctx.squared else 1.0) / ctx.per_sample).view(-1, *[1] * (saved.dim() - 1))
        grad = torch.mul(saved, scale)
        grad_pred = grad.to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None
        grad_target = grad.neg().to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
        return grad_pred, grad_target, None


def gram_matrix(features: Tensor) -> Tensor:
    """Normalised Gram matrix ``F F^T / (C * H * W)`` of ``(N, C, H, W)`` features -> ``(N, C, C)``.

    Always computed in float32 (or float64), with autocast off, so fp16 features cannot overflow.
    Its backward is one batched matrix product, ``(g + g^T) F / (C H W)`` (autograd's generic
    one takes two and a sum), and it keeps no copy of ``F`` beyond the features themselves. On
    CUDA the forward product is summed from chunks of pixels, which keeps the GPU busy.
    """
    return _GramMatrix.apply(features)


def _as_rows(f: Tensor) -> Tensor:
    """``(N, C, H, W)`` -> ``(N, H*W, C)`` without a copy (a transposed view for NCHW input)."""
    n, c, h, w = f.shape
    if _is_channels_last(f):
        return f.permute(0, 2, 3, 1).reshape(n, h * w, c)
    return f.reshape(n, c, h * w).transpose(1, 2)


def _split_k_gram(rows: Tensor) -> Tensor:
    """``rows^T rows`` for ``(N, K, C)`` rows, as a sum of products over chunks of ``K``.

    A Gram matrix is a skinny product (``C x C`` out of ``K = H W`` in, e.g. 64 x 64 from 65536):
    as one bmm, cuBLAS runs it on a few thread blocks, leaving most of a GPU idle (2.0 ms for
    16 x 64 x 256 x 256 on an H100). Split into ``S`` chunks of ``K`` it runs ``N S`` products
    in parallel and sums them (0.49 ms; the partial sums also round less). For channels_last
    features the chunks are a view; otherwise one copy.
    """
    n, k, c = rows.shape
    chunks = max(1, min(k // 1024, 256 // n))
    while k % chunks:
        chunks -= 1
    if chunks == 1:
        return torch.bmm(rows.transpose(1, 2), rows)
    pieces = rows.reshape(n * chunks, k // chunks, c)
    return torch.bmm(pieces.transpose(1, 2), pieces).view(n, chunks, c, c).sum(dim=1)


class _GramMatrix(torch.autograd.Function):
    """``F F^T / (C H W)`` in at least float32, for either memory format; see :func:`gram_matrix`."""

    @staticmethod
    def forward(ctx, features: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(features)
        rows = _as_rows(_float(features))
        n, c, h, w = features.shape
        with torch.autocast(device_type=features.device.type, enabled=False):
            product = _split_k_gram(rows) if features.is_cuda else torch.bmm(rows.transpose(1, 2), rows)
            return product.div_(c * h * w)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_gram: Tensor) -> Tensor:  # type: ignore[override]
        (features,) = ctx.saved_tensors
        n, c, h, w = features.shape
        symmetric = (grad_gram + grad_gram.transpose(1, 2)).div_(c * h * w)
        f = _float(features)
        if _is_channels_last(f):  # grad rows (N, HW, C) -> a channels_last (N, C, H, W)
            grad = torch.bmm(_as_rows(f), symmetric).view(n, h, w, c).permute(0, 3, 1, 2)
        else:
            grad = torch.bmm(symmetric, f.reshape(n, c, h * w)).view(n, c, h, w)
        return grad.to(features.dtype)


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
        value = weight * _elementwise(diff, distance).mean(dim=(1, 2))
        total = value if total is None else total + value
    assert total is not None, "layer_weights is empty"
    return total


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
    def backward(ctx, grad_value: Tensor) -> tuple[Optional[Tensor], Optional[Tensor], None, None]:  # type: ignore[override]
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
    spatial_size: Optional[tuple[int, int]] = None,
    eps: float = LPIPS_EPS,
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

    Returns:
        ``(N,)``, or ``(N, 1, H, W)`` (each layer's map upsampled bilinearly) with ``spatial_size``.
    """
    total: Optional[Tensor] = None
    for name, head in heads.items():
        target = target_normalized[name]
        weighted = _LPIPSLayer.apply(pred[name], _float(target), head, eps)
        if spatial_size is None:
            value = weighted.mean(dim=(1, 2, 3))
        else:
            value = F.interpolate(weighted, size=spatial_size, mode="bilinear", align_corners=False)
        total = value if total is None else total + value
    assert total is not None, "heads is empty"
    return total


DISTS_C1 = 1e-6
DISTS_C2 = 1e-6
"""DISTS' stabilising constants of the structure (means) and texture (covariance) terms."""


def _outside_autocast(device_type: str) -> Any:
    """A context with autocast off on ``device_type`` (a no-op where autocast does not exist)."""
    return torch.autocast(device_type, enabled=False) if torch.amp.is_autocast_available(device_type) else nullcontext()


class _Moments(torch.autograd.Function):
    """Per-channel ``mean x, mean y, var x, var y, cov(x, y)`` over ``H, W``, in float32 or wider.

    The reference computes ``cov`` as ``mean(x y) - mean x mean y``; centring first is the same
    value, with less cancellation.

    Saves only ``x``, ``y`` (kept anyway: the network's activations and the target's features)
    and the means; autograd's version keeps ``x - mean x`` and ``y - mean y`` too, a feature map
    per tap. Backward is one expression per side:
    ``d/dx = (g_mx + 2 g_vx (x - mx) + g_cov (y - my)) / (H W)``, and symmetrically for ``y``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # type: ignore[override]
        fx, fy = _float(x), _float(y)
        with _outside_autocast(fx.device.type):
            mean_x, mean_y = fx.mean(dim=(2, 3)), fy.mean(dim=(2, 3))
            # Centred, all three the same way: for y == x the covariance equals the variances
            # bit for bit, so DISTS(x, x) is exactly 0.
            centred_x, centred_y = fx - mean_x[..., None, None], fy - mean_y[..., None, None]
            var_x = torch.mul(centred_x, centred_x).mean(dim=(2, 3))
            var_y = torch.mul(centred_y, centred_y).mean(dim=(2, 3))
            cov = torch.mul(centred_x, centred_y).mean(dim=(2, 3))
        ctx.save_for_backward(x, y, mean_x, mean_y)
        return mean_x, mean_y, var_x, var_y, cov

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx, g_mean_x: Tensor, g_mean_y: Tensor, g_var_x: Tensor, g_var_y: Tensor, g_cov: Tensor
    ) -> tuple[Optional[Tensor], Optional[Tensor]]:
        x, y, mean_x, mean_y = ctx.saved_tensors
        area = x.shape[2] * x.shape[3]

        def side(f: Tensor, mean: Tensor, g_mean: Tensor, g_var: Tensor, other: Tensor, other_mean: Tensor) -> Tensor:
            grad = (_float(f) - mean[..., None, None]).mul_((2 * g_var / area)[..., None, None])
            grad.add_((g_mean / area)[..., None, None])
            grad.addcmul_(_float(other) - other_mean[..., None, None], (g_cov / area)[..., None, None])
            return grad.to(f.dtype)

        grad_x = side(x, mean_x, g_mean_x, g_var_x, y, mean_y) if ctx.needs_input_grad[0] else None
        grad_y = side(y, mean_y, g_mean_y, g_var_y, x, mean_x) if ctx.needs_input_grad[1] else None
        return grad_x, grad_y


def dists_distance(
    pred: Mapping[str, Tensor], target: Mapping[str, Tensor], alpha: Mapping[str, Tensor], beta: Mapping[str, Tensor]
) -> Tensor:
    """DISTS (Ding, Ma, Wang, Simoncelli, 2020) from two feature dicts.

    ``1 - sum_l sum_c (alpha_lc S1_lc + beta_lc S2_lc)`` with, per channel over ``H, W``,
    ``S1 = (2 mx my + c1) / (mx^2 + my^2 + c1)`` (structure of the means) and
    ``S2 = (2 cov + c2) / (vx + vy + c2)`` (texture), ``c1 = c2 = 1e-6``, as ``DISTS_pytorch``
    computes them. Statistics in float32 (float64 stays float64), with autocast off.

    Args:
        pred, target: ``{tap: (N, C_l, H_l, W_l)}`` with equal shapes per tap (DISTS' stages:
            the image itself, then VGG16 ``relu1_2 .. relu5_3`` with L2-pooling).
        alpha, beta: ``{tap: (C_l,)}`` weights, already divided by the sum of all of them.

    Returns:
        ``(N,)``, one distance per sample (0 for identical images).
    """
    total: Optional[Tensor] = None
    for name, a in alpha.items():
        mean_x, mean_y, var_x, var_y, cov = _Moments.apply(pred[name], target[name])
        structure = (2 * mean_x * mean_y + DISTS_C1) / (mean_x.square() + mean_y.square() + DISTS_C1)
        texture = (2 * cov + DISTS_C2) / (var_x + var_y + DISTS_C2)
        value = (structure * a.to(structure.dtype)).sum(dim=1) + (texture * beta[name].to(texture.dtype)).sum(dim=1)
        total = value if total is None else total + value
    if total is None:
        raise ValueError("alpha is empty: DISTS needs at least one tap.")
    return 1 - total
