"""SSIM and MS-SSIM (Wang et al. 2003, 2004) as losses: ``1 - index``, as ``pytorch-msssim`` computes them.

The index compares local means, variances and covariance under an ``11 x 11`` Gaussian window
(sigma 1.5), with ``C1 = (0.01 R)^2`` and ``C2 = (0.03 R)^2`` for a data range ``R``, filtered
"valid" (no padding: the map is ``win_size - 1`` pixels smaller on each axis), per channel, then
averaged over positions and channels. MS-SSIM takes contrast-structure terms at four scales (each
halved by a 2x2 average pool, padded on odd sides) and the full index at the fifth, weighted by
``(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``. Statistics are computed in float32 (float64 stays)
with autocast off, so fp16 inputs cannot overflow; the five local statistics come from one
grouped convolution per axis.

Zhao et al. 2017 ("Loss Functions for Image Restoration") train with ``0.84 MS-SSIM + 0.16 L1``;
CompressAI's MS-SSIM models with ``1 - MS-SSIM``. On float64 input :func:`ssim` is the
evaluator's SSIM (:func:`perceptual_loss.metrics.ssim`), and with ``sample_covariance=True``
scikit-image's default.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .losses._base import Reduction, check_reduction, reduce
from .validation import RANGE_TOLERANCE, float_pair

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""MS-SSIM's scale weights (Wang et al. 2003), finest first."""


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32) -> Tensor:
    """The normalised 1-D Gaussian window ``(size,)``, centred on ``size // 2``, computed in
    ``dtype`` if it is float64 (scikit-image's and the evaluator's numbers), else in float32
    (pytorch-msssim's, bit for bit)."""
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    coords = torch.arange(size, dtype=compute) - size // 2
    window = torch.exp(-(coords**2) / (2 * sigma**2))
    return (window / window.sum()).to(dtype)


@functools.lru_cache(maxsize=32)
def _cached_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """:func:`gaussian_window` on ``device``, made once per setting (no per-call allocation or copy);
    a normal tensor even when first asked for under ``torch.inference_mode`` (the evaluator), so
    autograd may use it later."""
    with torch.inference_mode(False):
        return gaussian_window(size, sigma, dtype).to(device)


@functools.lru_cache(maxsize=32)
def _cached_exponents(weights: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """MS-SSIM's scale weights as a ``(scales, 1, 1)`` tensor on ``device``, made once per setting
    (a normal tensor, as :func:`_cached_window`)."""
    with torch.inference_mode(False):
        return torch.tensor(weights, dtype=dtype).view(-1, 1, 1).to(device)


def _local_statistics(x: Tensor, y: Tensor, window: Tensor) -> tuple[Tensor, ...]:
    """``mu_x, mu_y, E[x^2], E[y^2], E[xy]`` under the separable ``window``, valid filtering."""
    channels = x.shape[1]
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    size = window.numel()
    weight = window.view(1, 1, size, 1).expand(5 * channels, 1, size, 1)
    filtered = F.conv2d(stacked, weight, groups=5 * channels)
    filtered = F.conv2d(filtered, weight.transpose(2, 3), groups=5 * channels)
    return filtered.chunk(5, dim=1)


def _ssim_and_cs(
    x: Tensor, y: Tensor, window: Tensor, data_range: float, k: tuple[float, float], compensation: float = 1.0
) -> tuple[Tensor, Tensor]:
    """``(ssim map, contrast-structure map)``, each ``(N, C, H - w + 1, W - w + 1)``; ``compensation``
    scales the (co)variances (``w^2 / (w^2 - 1)``: sample covariances)."""
    c1, c2 = (k[0] * data_range) ** 2, (k[1] * data_range) ** 2
    mu_x, mu_y, xx, yy, xy = _local_statistics(x, y, window)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    cs = (2 * compensation * (xy - mu_xy) + c2) / (compensation * ((xx - mu_xx) + (yy - mu_yy)) + c2)
    return (2 * mu_xy + c1) / (mu_xx + mu_yy + c1) * cs, cs


def _prepared(
    pred: Tensor, target: Tensor, win_size: int, sigma: float, name: str, scales: int = 1
) -> tuple[Tensor, Tensor, Tensor]:
    """Checked float32+ copies of the pair (autocast off by the caller) and the window."""
    pred, target = float_pair(pred, target, name)
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"{name}: win_size must be a positive odd int; got {win_size}.")
    smallest = (win_size - 1) * 2 ** (scales - 1) + 1
    if min(pred.shape[-2:]) < smallest:
        what = f"{scales} scales and a {win_size}-pixel window" if scales > 1 else f"a {win_size}-pixel window"
        raise ValueError(
            f"{name} with {what} needs images of at least {smallest}x{smallest} pixels; got "
            f"{pred.shape[-2]}x{pred.shape[-1]}. Use larger images or a smaller win_size."
        )
    return pred, target, _cached_window(win_size, float(sigma), pred.dtype, pred.device)


def ssim(
    pred: Tensor,
    target: Tensor,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k: tuple[float, float] = (0.01, 0.03),
    mask: Tensor | None = None,
    sample_covariance: bool = False,
) -> Tensor:
    """SSIM per sample, ``(N, C, H, W) x2 -> (N,)``: the map's mean over positions, then channels.

    ``mask`` ``(N or 1, 1, H, W)`` weights the map's positions by the mask at each window's
    centre (the map is ``win_size // 2`` pixels smaller on every side). ``sample_covariance``
    scales the local (co)variances by ``w^2 / (w^2 - 1)``, as scikit-image does by default
    (``structural_similarity(gaussian_weights=True, use_sample_covariance=True)``); without it
    (the default) this is pytorch-msssim's SSIM, and in float64 the evaluator's
    (:func:`perceptual_loss.metrics.ssim`, scikit-image's ``use_sample_covariance=False``).

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> ssim(x, x).tolist()
        [1.0, 1.0]
    """
    with torch.autocast(pred.device.type, enabled=False):
        x, y, window = _prepared(pred, target, win_size, sigma, "SSIM")
        compensation = win_size**2 / (win_size**2 - 1) if sample_covariance else 1.0
        index, _ = _ssim_and_cs(x, y, window, data_range, k, compensation)
        if mask is None:
            return index.flatten(2).mean(-1).mean(-1)
        half = win_size // 2
        weights = mask.to(index.dtype)[..., half : mask.shape[-2] - half, half : mask.shape[-1] - half]
        total = (index * weights).sum(dim=(2, 3)).mean(-1)
        return total / weights.sum(dim=(1, 2, 3)).clamp_min(1e-12)


def ms_ssim(
    pred: Tensor,
    target: Tensor,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k: tuple[float, float] = (0.01, 0.03),
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
) -> Tensor:
    """MS-SSIM per sample, ``(N, C, H, W) x2 -> (N,)`` (``pytorch_msssim.ms_ssim(..., size_average=False)``).

    Needs sides larger than ``(win_size - 1) * 2^(scales - 1)`` (161 pixels for 5 scales).

    Example:
        >>> x = torch.rand(1, 3, 176, 176)
        >>> round(ms_ssim(x, x).item(), 6)
        1.0
    """
    scales = len(weights)
    with torch.autocast(pred.device.type, enabled=False):
        x, y, window = _prepared(pred, target, win_size, sigma, "MS-SSIM", scales)
        levels: list[Tensor] = []
        for scale in range(scales):
            index, cs = _ssim_and_cs(x, y, window, data_range, k)
            if scale < scales - 1:
                levels.append(torch.relu(cs.flatten(2).mean(-1)))
                padding = [side % 2 for side in x.shape[2:]]
                x, y = F.avg_pool2d(x, 2, padding=padding), F.avg_pool2d(y, 2, padding=padding)
        levels.append(torch.relu(index.flatten(2).mean(-1)))
        stacked = torch.stack(levels)  # (scales, N, C)
        exponents = _cached_exponents(tuple(float(w) for w in weights), stacked.dtype, stacked.device)
        return torch.prod(stacked**exponents, dim=0).mean(-1)


def _check_data_range(pred: Tensor, target: Tensor, data_range: float, name: str) -> None:
    """The target's values must fit ``[0, data_range]`` (within the usual tolerance); one host read."""
    if torch.compiler.is_compiling() or not target.numel():
        return
    low, high = (float(v) for v in torch.aminmax(target.detach()))
    margin = RANGE_TOLERANCE * data_range
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name}: target contains NaN or Inf values; check the data pipeline.")
    if low < -margin or high > data_range + margin:
        hint = " Pass data_range=255 for 8-bit images." if data_range < 20 <= high <= 255 + margin else ""
        raise ValueError(
            f"{name}: target values span [{low:.3g}, {high:.3g}], outside [0, data_range={data_range:g}].{hint} "
            "Map them to [0, data_range], or pass check_inputs=False."
        )


class _StructuralLoss(nn.Module):
    """``1 - index`` with the shared arguments of :class:`SSIMLoss` and :class:`MSSSIMLoss`."""

    def __init__(
        self,
        data_range: float = 1.0,
        win_size: int = 11,
        sigma: float = 1.5,
        k: tuple[float, float] = (0.01, 0.03),
        reduction: Reduction = "mean",
        check_inputs: bool = True,
    ) -> None:
        super().__init__()
        if not (isinstance(data_range, (int, float)) and data_range > 0):
            raise ValueError(f"data_range must be a positive number (1.0 or 255); got {data_range!r}.")
        self.data_range, self.win_size, self.sigma = float(data_range), int(win_size), float(sigma)
        self.k: tuple[float, float] = (float(k[0]), float(k[1]))
        self.reduction = check_reduction(reduction)
        self.check_inputs = check_inputs

    def extra_repr(self) -> str:
        return f"data_range={self.data_range:g}, win_size={self.win_size}, sigma={self.sigma:g}"


class SSIMLoss(_StructuralLoss):
    """``1 - SSIM``, equal to ``1 - pytorch_msssim.ssim`` (within 1e-6).

    Args:
        sample_covariance: scikit-image's default convention (local variances times
            ``w^2 / (w^2 - 1)``); on float64 input, ``1 - SSIMLoss(sample_covariance=True)`` is
            ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5)``, and
            ``1 - SSIMLoss()`` the evaluator's SSIM (``use_sample_covariance=False``).
        data_range: the images' value range ``R`` (1.0 for ``[0, 1]``, 255 for 8-bit values).
        win_size, sigma: the Gaussian window (11, 1.5).
        k: ``(K1, K2)``, default ``(0.01, 0.03)``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the batch.
        check_inputs: check that the target fits ``[0, data_range]`` (one host read per call).

    Shape:
        - pred, target: ``(N, C, H, W)``, any ``C``, ``H, W >= win_size``.
        - mask (optional): ``(N or 1, 1, H, W)`` weights of the map's positions.
        - Output: ``()``, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> loss = SSIMLoss()
        >>> x = torch.rand(2, 3, 64, 64, requires_grad=True)
        >>> value = loss(x, torch.rand(2, 3, 64, 64))
        >>> value.backward()
        >>> 0 < value.item() < 2, loss(x, x).item()
        (True, 0.0)
    """

    def __init__(self, sample_covariance: bool = False, **kwargs: float | str | bool | tuple[float, float]) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.sample_covariance = bool(sample_covariance)

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.check_inputs:
            _check_data_range(pred, target, self.data_range, "SSIMLoss")
        value = ssim(pred, target, self.data_range, self.win_size, self.sigma, self.k, mask, self.sample_covariance)
        return reduce(1 - value, self.reduction)


class MSSSIMLoss(_StructuralLoss):
    """``1 - MS-SSIM``, equal to ``1 - pytorch_msssim.ms_ssim`` (within 1e-6).

    Args:
        weights: the scale weights, finest first (MS-SSIM's five by default); their count is
            the number of scales.
        data_range, win_size, sigma, k, reduction, check_inputs: as for :class:`SSIMLoss`.

    Shape:
        - pred, target: ``(N, C, H, W)`` with sides larger than ``(win_size - 1) * 16`` (161
          pixels for five scales and the 11-pixel window).
        - Output: ``()``, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> loss = MSSSIMLoss()
        >>> x = torch.rand(1, 3, 192, 192)
        >>> round(float(loss(x, x)), 6)
        0.0
    """

    def __init__(
        self, weights: Sequence[float] = MS_SSIM_WEIGHTS, **kwargs: float | str | bool | tuple[float, float]
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if not weights or any(not (w >= 0) for w in weights):
            raise ValueError(f"MS-SSIM weights must be a non-empty list of numbers >= 0; got {list(weights)}.")
        self.weights = tuple(float(w) for w in weights)

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            raise ValueError(
                "MSSSIMLoss takes no mask: its coarse scales mix every region. Use SSIMLoss(mask=...) for a region."
            )
        if self.check_inputs:
            _check_data_range(pred, target, self.data_range, "MSSSIMLoss")
        value = ms_ssim(pred, target, self.data_range, self.win_size, self.sigma, self.k, self.weights)
        return reduce(1 - value, self.reduction)
