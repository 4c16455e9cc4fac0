"""Full-reference image-quality metrics for evaluation: PSNR, SSIM, and the Y channel.

All functions take ``(N, C, H, W)`` float images in ``[0, data_range]`` and return ``(N,)``,
computed in float64 so that scores do not depend on the input dtype. (LPIPS is
:class:`~perceptual_loss.LPIPSLoss` with ``reduction="none"``.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Structural similarity (Wang et al., 2004) per image -> ``(N,)``.

    Gaussian window 11x11 with sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, population covariances,
    averaged over the valid (unpadded) window positions and the channels: the same as
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=0)``. Needs ``H, W >= 11``.

    The 2-D Gaussian is applied as two 1-D passes (it is their outer product): the same values
    to about 1e-16, 30x faster than one 11x11 depthwise convolution in float64.
    """
    if min(pred.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels; got {pred.shape[-2]}x{pred.shape[-1]}.")
    channels = pred.shape[1]
    x, y = pred.double().contiguous(), target.double().contiguous()
    # The five blurred maps in one pass: [x, y, x*x, y*y, x*y] side by side as channels.
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    g = _gaussian_1d().to(pred.device)
    groups = 5 * channels
    maps = F.conv2d(maps, g.view(1, 1, 1, 11).expand(groups, 1, 1, 11), groups=groups)
    maps = F.conv2d(maps, g.view(1, 1, 11, 1).expand(groups, 1, 11, 1), groups=groups)
    mu_x, mu_y, xx, yy, xy = maps.split(channels, dim=1)
    var_x = xx - mu_x.square()
    var_y = yy - mu_y.square()
    cov = xy - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)
