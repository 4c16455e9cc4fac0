"""Gram matrices and the style distance between them (Gatys et al.; Johnson et al.)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._common import Distance, _elementwise, _float, _is_channels_last
from .masks import MASK_EPS

GRAM_DISTANCES = ("l1", "l2")


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
