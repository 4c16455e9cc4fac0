"""How perceptual terms compare: pure functions of feature dicts, no network inside.

Every loss in the library is "what it looks at" (a :class:`~perceptual_loss.FeatureExtractor`)
plus one of these comparisons, so a criterion that runs a backbone once can hand the same features
to several comparisons. Values that can overflow or lose precision in half precision (Gram
matrices, channel norms, means) are computed in float32 (float64 stays float64), with autocast off.

Shapes: a feature dict is ``{tap: (N, C, H, W)}``; results are ``(N,)`` (one value per sample) or
``(N, 1, H, W)`` for the spatial LPIPS map.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

Distance = Literal["l1", "l2", "normalized_l2", "fro"]
DISTANCES = ("l1", "l2", "normalized_l2", "fro")
"""Feature distances: mean absolute, mean squared, squared distance of channel-normalised feature
vectors summed over channels (LPIPS without its learned heads; MONAI's perceptual loss), and the
Frobenius norm of the difference per sample (BasicSR's ``criterion: fro``)."""
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


def gram_matrix(features: Tensor, mask: Tensor | None = None) -> Tensor:
    """Normalised Gram matrix ``F F^T / (C * H * W)`` of ``(N, C, H, W)`` features -> ``(N, C, C)``.

    With a ``(N or 1, 1, H, W)`` ``mask`` of weights ``m``, the weighted Gram matrix
    ``F diag(m) F^T / (C * sum(m))``: for a binary mask, the Gram matrix of the masked region.

    Always computed in float32 (or float64), with autocast off, so fp16 features cannot overflow.
    Its backward is one batched matrix product, ``(g + g^T) F / (C H W)`` (autograd's generic
    one takes two and a sum), and it keeps no copy of ``F`` beyond the features themselves. On
    CUDA the forward product is summed from chunks of pixels, which keeps the GPU busy.
    """
    if mask is None:
        return _GramMatrix.apply(features)
    weights = _float(mask)
    area = features.shape[2] * features.shape[3]
    scale = area / weights.sum(dim=(1, 2, 3)).clamp_min(MASK_EPS)
    return _GramMatrix.apply(_float(features) * weights.sqrt()) * scale.view(-1, 1, 1)


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
        _, c, h, w = features.shape
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


def gram_matrices(features: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """:func:`gram_matrix` of each tap (mask-weighted with ``masks``): ``{tap: (N, C, C)}``."""
    return {name: gram_matrix(f, None if masks is None else masks[name]) for name, f in features.items()}


def style_distance(
    pred: Mapping[str, Tensor],
    target_grams: Mapping[str, Tensor],
    layer_weights: Mapping[str, float],
    distance: Distance = "l2",
    masks: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Weighted Gram-matrix (style) distance (Gatys et al., 2016).

    ``sum_l w_l * mean_{i,j} (G_l(pred) - G_l(target))_{ij}^2`` for ``l2``, absolute for ``l1``.

    Args:
        pred: ``{tap: (N, C, H, W)}`` features of the prediction.
        target_grams: ``{tap: (N or 1, C, C)}``, from :func:`gram_matrices` of the target (its
            spatial size may differ from the prediction's; batch 1 is broadcast).
        layer_weights: ``{tap: weight}``.
        masks: ``{tap: (N or 1, 1, H, W)}``: the prediction's Gram matrices are mask-weighted.

    Returns:
        ``(N,)``, one value per sample.
    """
    total: Tensor | None = None
    for name, weight in layer_weights.items():
        diff = gram_matrix(pred[name], None if masks is None else masks[name]) - target_grams[name]
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


DISTS_C1 = 1e-6
DISTS_C2 = 1e-6
"""DISTS' stabilising constants of the structure (means) and texture (covariance) terms."""


def _outside_autocast(device_type: str) -> Any:
    """A context with autocast off on ``device_type`` (a no-op where autocast does not exist)."""
    return torch.autocast(device_type, enabled=False) if torch.amp.is_autocast_available(device_type) else nullcontext()


class _Moments(torch.autograd.Function):
    """Per-channel ``mean x, mean y, var x, var y, cov(x, y)`` over ``H, W``, in float32 or wider;
    with a mask, the moments of the mask-weighted distribution ``p = m / sum(m)`` of positions.

    The reference computes ``cov`` as ``mean(x y) - mean x mean y``; centring first is the same
    value, with less cancellation, and for ``y == x`` the covariance equals the variances bit
    for bit, so DISTS(x, x) is exactly 0. Saves only ``x``, ``y`` (kept anyway: the network's
    activations and the target's features), the means and the weights; autograd's version keeps
    ``x - mean x`` and ``y - mean y`` too. Backward is one expression per side:
    ``d/dx = p (g_mx + 2 g_vx (x - mx) + g_cov (y - my))``, and symmetrically for ``y``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # type: ignore[override]
        fx, fy = _float(x), _float(y)
        with _outside_autocast(fx.device.type):
            weights = (
                None
                if mask is None
                else _float(mask) / _float(mask).sum(dim=(1, 2, 3), keepdim=True).clamp_min(MASK_EPS)
            )

            def weighted_mean(t: Tensor) -> Tensor:
                return t.mean(dim=(2, 3)) if weights is None else (t * weights).sum(dim=(2, 3))

            mean_x, mean_y = weighted_mean(fx), weighted_mean(fy)
            centred_x, centred_y = fx - mean_x[..., None, None], fy - mean_y[..., None, None]
            var_x = weighted_mean(torch.mul(centred_x, centred_x))
            var_y = weighted_mean(torch.mul(centred_y, centred_y))
            cov = weighted_mean(torch.mul(centred_x, centred_y))
        ctx.area = x.shape[2] * x.shape[3]
        ctx.save_for_backward(x, y, mean_x, mean_y, *(() if weights is None else (weights,)))
        return mean_x, mean_y, var_x, var_y, cov

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx, g_mean_x: Tensor, g_mean_y: Tensor, g_var_x: Tensor, g_var_y: Tensor, g_cov: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None]:
        x, y, mean_x, mean_y, *weights = ctx.saved_tensors

        # p (g_mean + 2 g_var (f - mean) + g_cov (other - other_mean)) == a f + b other + c, with
        # p = 1 / (H W) folded in without a mask: two passes, no temporaries.
        p = 1.0 if weights else 1.0 / ctx.area

        def side(f: Tensor, mean: Tensor, g_mean: Tensor, g_var: Tensor, other: Tensor, other_mean: Tensor) -> Tensor:
            a, b = (2 * g_var * p)[..., None, None], (g_cov * p)[..., None, None]
            c = ((g_mean - 2 * g_var * mean - g_cov * other_mean) * p)[..., None, None]
            grad = torch.addcmul(c, _float(f), a).addcmul_(_float(other), b)
            return (grad.mul_(weights[0]) if weights else grad).to(f.dtype)

        grad_x = side(x, mean_x, g_mean_x, g_var_x, y, mean_y) if ctx.needs_input_grad[0] else None
        grad_y = side(y, mean_y, g_mean_y, g_var_y, x, mean_x) if ctx.needs_input_grad[1] else None
        return grad_x, grad_y, None


def dists_distance(
    pred: Mapping[str, Tensor],
    target: Mapping[str, Tensor],
    alpha: Mapping[str, Tensor],
    beta: Mapping[str, Tensor],
    masks: Mapping[str, Tensor] | None = None,
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
        masks: ``{tap: (N or 1, 1, H_l, W_l)}`` (see :func:`masks_at`): the statistics become
            mask-weighted means, variances and covariances, or ``None``.

    Returns:
        ``(N,)``, one distance per sample (0 for identical images).
    """
    total: Tensor | None = None
    for name, a in alpha.items():
        mean_x, mean_y, var_x, var_y, cov = _Moments.apply(
            pred[name], target[name], None if masks is None else masks[name]
        )
        structure = (2 * mean_x * mean_y + DISTS_C1) / (mean_x.square() + mean_y.square() + DISTS_C1)
        texture = (2 * cov + DISTS_C2) / (var_x + var_y + DISTS_C2)
        value = (structure * a.to(structure.dtype)).sum(dim=1) + (texture * beta[name].to(texture.dtype)).sum(dim=1)
        total = value if total is None else total + value
    if total is None:
        raise ValueError("alpha is empty: DISTS needs at least one tap.")
    return 1 - total
