"""Full-reference image-quality metrics for evaluation: PSNR, SSIM, and the Y channel.

All functions take ``(N, C, H, W)`` float images in ``[0, data_range]`` and return ``(N,)``,
computed in float64 so that scores do not depend on the input dtype. (LPIPS is
:class:`~perceptual_loss.LPIPSLoss` with ``reduction="none"``.)
"""

from __future__ import annotations

import torch
from torch import Tensor


def rgb_to_y(images: Tensor) -> Tensor:
    """ITU-R BT.601 luma of ``[0, 1]`` RGB, as in super-resolution papers (MATLAB's ``rgb2ycbcr``).

    Shape: ``(N, 3, H, W)`` in ``[0, 1]`` -> ``(N, 1, H, W)`` in ``[16/255, 235/255]``.
    """
    weights = images.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True) / 255.0 + 16.0 / 255.0


def crop_border(images: Tensor, border: int) -> Tensor:
    """Drop ``border`` pixels on every side (the SR convention shaves ``scale`` pixels)."""
    if border <= 0:
        return images
    if min(images.shape[-2:]) <= 2 * border:
        raise ValueError(
            f"Cannot crop {border} pixels from each side of a {images.shape[-2]}x{images.shape[-1]} image."
        )
    return images[..., border:-border, border:-border]


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)`` per image -> ``(N,)``.

    Identical images give ``inf``.
    """
    mse = (pred.double() - target.double()).square().flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Structural similarity (Wang et al., 2004) per image -> ``(N,)``, computed in float64.

    Gaussian window 11x11 with sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, population covariances,
    averaged over the valid (unpadded) window positions and the channels: the same as
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=0)``. Needs ``H, W >= 11``. It is
    :func:`perceptual_loss.structural.ssim` (the loss's index) on float64 copies.
    """
    from .structural import ssim as structural_ssim

    return structural_ssim(pred.double(), target.double(), data_range)
