"""The contextual loss (Mechrez et al., ECCV 2018) and its bilateral variant CoBi (Zhang et al., CVPR 2019).

For pairs that are not aligned (two cameras, zoom data, style): every feature position ``i`` of
pred is compared with every position ``j`` of the target by the cosine distance of their feature
vectors, centred on the target's mean feature, ``d_ij = 1 - cos(x_i - mu_y, y_j - mu_y)``. Each
row is made relative to its nearest neighbour, ``d~_ij = d_ij / (min_k d_ik + 1e-5)``, turned into
affinities ``w_ij = exp((1 - d~_ij) / h)`` for a bandwidth ``h`` and normalised over the row,
``CX_ij = w_ij / sum_k w_ik``. The contextual similarity is ``CX = mean_j max_i CX_ij`` (how well
each target feature is matched by some pred feature), and the loss ``-log((CX + 1e-5) / (1 + 1e-5))``:
the paper's ``-log(CX + 1e-5)`` less its value at a perfect match, so identical inputs give 0.

CoBi (``spatial_weight=s > 0``, pairs of one size) mixes in the affinity of the positions
themselves, ``(1 - s) CX_ij + s CX^sp_ij`` with ``CX^sp`` from the squared distance of the
positions' normalised grid coordinates, and averages each pred feature's best match,
``mean_i max_j``.

Memory: the ``(HW x HW)`` matrix is built in blocks of pred positions, each recomputed in
backward (activation checkpointing), so memory holds one block. The target's mean is taken per
sample (the public PyTorch port averages it over the batch too, which ties samples together).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ._common import _float, normalize_channels

CONTEXTUAL_EPS = 1e-5
"""The constants of the relative distance and of ``-log(CX + eps)``, as in the paper's code."""

BLOCK = 1024
"""Pred positions per block of the position-by-position matrix."""


def _relative_affinity(distance: Tensor, bandwidth: float) -> Tensor:
    """``CX`` of a block of rows ``(N, b, J)``: relative distances, affinities, normalised over ``j``."""
    relative = distance / (distance.amin(dim=2, keepdim=True) + CONTEXTUAL_EPS)
    return torch.softmax((1 - relative) / bandwidth, dim=2)


def _grid(height: int, width: int, like: Tensor) -> Tensor:
    """``(2, H*W)`` grid coordinates ``(r / (H + 1), c / (W + 1))``, row-major."""
    rows = torch.arange(height, dtype=like.dtype, device=like.device) / (height + 1)
    cols = torch.arange(width, dtype=like.dtype, device=like.device) / (width + 1)
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"))
    return grid.reshape(2, -1)


def _block_best(
    x: Tensor, y: Tensor, bandwidth: float, spatial: Tensor | None, spatial_weight: float, grid: Tensor | None
) -> Tensor:
    """For one block of pred positions ``x`` ``(N, C, b)`` against all target positions ``y``
    ``(N, C, J)``: ``(N, J)`` max over the block's rows (CX) or ``(N, b)`` max over ``j`` (CoBi)."""
    cx = _relative_affinity(1 - torch.bmm(x.transpose(1, 2), y), bandwidth)
    if spatial is None:
        return cx.amax(dim=1)
    assert grid is not None
    squared = (spatial.unsqueeze(2) - grid.unsqueeze(1)).square().sum(0)  # (b, J)
    cx_spatial = _relative_affinity(squared.clamp_min(0).unsqueeze(0), bandwidth)
    return ((1 - spatial_weight) * cx + spatial_weight * cx_spatial).amax(dim=2)


def _contextual_one(pred: Tensor, target: Tensor, bandwidth: float, spatial_weight: float, block: int) -> Tensor:
    """``(N,)`` ``-log(CX + eps)`` of one tap's features."""
    p, t = _float(pred), _float(target)
    mean = t.mean(dim=(2, 3), keepdim=True)
    x = normalize_channels(p - mean).flatten(2)  # (N, C, I)
    y = normalize_channels(t - mean).flatten(2)  # (N, C, J)
    grid = None
    if spatial_weight:
        if p.shape[-2:] != t.shape[-2:]:
            raise ValueError(
                f"spatial_weight= (CoBi) compares positions, so pred and target features need one size; got "
                f"{tuple(p.shape[-2:])} and {tuple(t.shape[-2:])}. Use spatial_weight=0 for pairs of other sizes."
            )
        grid = _grid(p.shape[-2], p.shape[-1], p)
    best = []
    for start in range(0, x.shape[2], block):
        rows = x[:, :, start : start + block]
        here = None if grid is None else grid[:, start : start + block]
        args = (rows, y, bandwidth, here, spatial_weight, grid)
        if torch.is_grad_enabled() and (rows.requires_grad or y.requires_grad):
            best.append(checkpoint(_block_best, *args, use_reentrant=False))
        else:
            best.append(_block_best(*args))
    if grid is None:
        similarity = torch.stack(best).amax(dim=0).mean(dim=1)  # mean_j max_i
    else:
        similarity = torch.cat(best, dim=1).mean(dim=1)  # mean_i max_j
    return -torch.log((similarity + CONTEXTUAL_EPS) / (1 + CONTEXTUAL_EPS))


def contextual_distance(
    pred: Mapping[str, Tensor],
    target: Mapping[str, Tensor],
    layer_weights: Mapping[str, float],
    bandwidth: float = 0.5,
    spatial_weight: float = 0.0,
    block: int = BLOCK,
) -> Tensor:
    """Contextual loss per sample, ``(N,)``: ``sum_l w_l * -log((CX_l + 1e-5) / (1 + 1e-5))`` over the taps.

    Args:
        pred, target: ``{tap: (N, C, H, W)}``; the target's positions may differ in number.
        layer_weights: ``{tap: weight}``.
        bandwidth: ``h`` (0.5, the paper's; CoBi uses 1.0).
        spatial_weight: CoBi's weight of the positions' own affinity (0: the contextual loss).
        block: pred positions per block of the matrix (memory: ``N * block * H * W`` floats).

    Example:
        >>> f = {"relu3_4": torch.rand(2, 8, 6, 5)}
        >>> bool((contextual_distance(f, f, {"relu3_4": 1.0}).abs() < 1e-5).all())
        True
    """
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0; got {bandwidth!r}.")
    if not 0 <= spatial_weight <= 1:
        raise ValueError(f"spatial_weight must be in [0, 1]; got {spatial_weight!r}.")
    total: Tensor | None = None
    for name, weight in layer_weights.items():
        value = weight * _contextual_one(pred[name], target[name], bandwidth, spatial_weight, block)
        total = value if total is None else total + value
    assert total is not None, "layer_weights is empty"
    return total
