"""DISTS' comparison (Ding et al. 2020): structure and texture terms from per-channel moments."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._common import _float
from .masks import MASK_EPS

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
