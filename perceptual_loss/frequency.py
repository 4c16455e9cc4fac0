"""Frequency-domain losses: focal frequency (Jiang et al., ICCV 2021) and the FFT L1 of deblurring models.

Both compare spectra, so a mask has no meaning for them (a region of the image is every
frequency): they take none. Spectra are computed in float32 (float64 stays) with autocast off.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .losses._base import Reduction, check_reduction, reduce
from .validation import float_pair


def _patch_spectra(x: Tensor, patch_factor: int) -> Tensor:
    """``(N, P, C, h, w)`` orthonormal 2-D spectra of the ``patch_factor^2`` patches (row-major)."""
    n, c, height, width = x.shape
    h, w = height // patch_factor, width // patch_factor
    patches = x.unfold(2, h, h).unfold(3, w, w)  # (N, C, pf, pf, h, w)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(n, patch_factor * patch_factor, c, h, w)
    return torch.fft.fft2(patches, norm="ortho")


def focal_frequency_distance(
    pred: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    patch_factor: int = 1,
    ave_spectrum: bool = False,
    log_matrix: bool = False,
    batch_matrix: bool = False,
) -> Tensor:
    """Focal frequency loss per sample, ``(N,)`` (``(1,)`` with ``ave_spectrum``): the mean over
    patches, channels and frequencies of ``w * |F(pred) - F(target)|^2``, with the detached
    spectrum weight ``w = |F(pred) - F(target)|^alpha`` (``log(1 + .)`` with ``log_matrix``)
    scaled to ``[0, 1]`` by its maximum per patch and channel (over the batch with
    ``batch_matrix``). The batch mean is ``focal_frequency_loss.FocalFrequencyLoss``'s value.

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> focal_frequency_distance(x, x).tolist()
        [0.0, 0.0]
    """
    if not (isinstance(patch_factor, int) and patch_factor >= 1):
        raise ValueError(f"patch_factor must be a positive int; got {patch_factor!r}.")
    with torch.autocast(pred.device.type, enabled=False):
        p, t = float_pair(pred, target, "focal frequency loss")
        if p.shape[-2] % patch_factor or p.shape[-1] % patch_factor:
            raise ValueError(
                f"patch_factor={patch_factor} must divide the image's height and width; got {p.shape[-2]}x{p.shape[-1]}."
            )
        p_freq, t_freq = _patch_spectra(p, patch_factor), _patch_spectra(t, patch_factor)
        if ave_spectrum:
            p_freq, t_freq = p_freq.mean(0, keepdim=True), t_freq.mean(0, keepdim=True)
        diff = p_freq - t_freq
        distance = diff.real.square() + diff.imag.square()
        with torch.no_grad():
            matrix = distance.sqrt() ** alpha
            if log_matrix:
                matrix = torch.log(matrix + 1.0)
            if batch_matrix:
                matrix = matrix / matrix.max()
            else:
                matrix = matrix / matrix.amax(dim=(-2, -1), keepdim=True)
            matrix = torch.nan_to_num(matrix, nan=0.0).clamp(0.0, 1.0)
        return (matrix * distance).flatten(1).mean(1)


def fft_distance(pred: Tensor, target: Tensor, norm: str = "backward") -> Tensor:
    """FFT L1 per sample, ``(N,)``: the mean absolute difference of the real and imaginary parts of
    ``torch.fft.rfft2`` (the frequency loss of MIMO-UNet and NAFNet-style deblurring models).

    Example:
        >>> x = torch.rand(2, 3, 16, 16)
        >>> fft_distance(x, x).tolist()
        [0.0, 0.0]
    """
    if norm not in ("backward", "ortho", "forward"):
        raise ValueError(f"norm must be 'backward', 'ortho' or 'forward' (torch.fft's); got {norm!r}.")
    with torch.autocast(pred.device.type, enabled=False):
        p, t = float_pair(pred, target, "FFT loss")
        diff = torch.view_as_real(torch.fft.rfft2(p, norm=norm) - torch.fft.rfft2(t, norm=norm))
        return diff.abs().flatten(1).mean(1)


class FocalFrequencyLoss(nn.Module):
    """Focal frequency loss (Jiang et al., ICCV 2021), equal to ``focal_frequency_loss.FocalFrequencyLoss``.

    Args:
        alpha: the exponent of the spectrum weight (1.0).
        patch_factor: split each image into ``patch_factor^2`` patches, one spectrum each (1).
        ave_spectrum: compare the batch's mean spectra (one value for the batch).
        log_matrix: weight by ``log(1 + |diff|^alpha)``.
        batch_matrix: scale the weight by its maximum over the whole batch.
        reduction: ``"mean"`` (the reference's value) | ``"sum"`` | ``"none"`` over the batch
            (``"none"`` gives ``(1,)`` with ``ave_spectrum``).

    Shape:
        - pred, target: ``(N, C, H, W)``, ``H`` and ``W`` multiples of ``patch_factor``.
        - Output: ``()``, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> loss = FocalFrequencyLoss()
        >>> x = torch.rand(2, 3, 32, 32, requires_grad=True)
        >>> loss(x, torch.rand(2, 3, 32, 32)).backward()
        >>> x.grad.shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(
        self,
        alpha: float = 1.0,
        patch_factor: int = 1,
        ave_spectrum: bool = False,
        log_matrix: bool = False,
        batch_matrix: bool = False,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0; got {alpha!r}.")
        self.options = {
            "alpha": float(alpha),
            "patch_factor": patch_factor,
            "ave_spectrum": ave_spectrum,
            "log_matrix": log_matrix,
            "batch_matrix": batch_matrix,
        }
        self.reduction = check_reduction(reduction)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return reduce(focal_frequency_distance(pred, target, **self.options), self.reduction)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.options.items())


class FFTLoss(nn.Module):
    """L1 of the real and imaginary parts of ``rfft2`` (MIMO-UNet's and NAFNet-style deblurring's frequency loss).

    Args:
        norm: ``torch.fft``'s normalisation: ``"backward"`` (default: none, as those models) |
            ``"ortho"`` | ``"forward"``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the batch.

    Shape:
        - pred, target: ``(N, C, H, W)``.
        - Output: ``()``, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> loss = FFTLoss()
        >>> x = torch.rand(2, 3, 32, 32)
        >>> float(loss(x, x))
        0.0
    """

    def __init__(self, norm: str = "backward", reduction: Reduction = "mean") -> None:
        super().__init__()
        if norm not in ("backward", "ortho", "forward"):
            raise ValueError(f"norm must be 'backward', 'ortho' or 'forward' (torch.fft's); got {norm!r}.")
        self.norm = norm
        self.reduction = check_reduction(reduction)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return reduce(fft_distance(pred, target, self.norm), self.reduction)

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}"
