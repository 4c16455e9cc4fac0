"""SR metrics as in SR papers: PSNR and SSIM on the luma (Y) channel with a border shave, plus LPIPS.

- Y: ITU-R BT.601 studio-swing luma, ``Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255`` for
  RGB in [0, 1] (MATLAB's ``rgb2ycbcr``), so Y is in [16/255, 235/255]; PSNR and SSIM use
  ``data_range=1`` (= 255 on 8-bit values).
- Shave: ``scale`` pixels are removed from each border before scoring (EDSR/RCAN convention).
- SSIM: Gaussian window 11, sigma 1.5 (torchmetrics' defaults, Wang et al. 2004).
- LPIPS: :class:`perceptual_loss.LPIPSLoss` with ``net="alex"`` (v0.1), ``reduction="none"``, on
  the shaved RGB images. Lower is better. Only perceptual with ImageNet weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from perceptual_loss import LPIPSLoss
from perceptual_loss.metrics import crop_border as shave
from perceptual_loss.metrics import rgb_to_y

__all__ = ["METRICS", "SRMetrics", "psnr_y", "rgb_to_y", "shave", "ssim_y"]

METRICS = ("psnr", "ssim", "lpips")
"""Metric names, in table order. Higher is better for PSNR/SSIM, lower for LPIPS."""


def psnr_y(pred: Tensor, target: Tensor, border: int = 0) -> Tensor:
    """Per-image PSNR (dB) on Y: ``(N, 3, H, W)`` x2 in [0, 1] -> ``(N,)``."""
    p, t = shave(rgb_to_y(pred.clamp(0, 1)), border), shave(rgb_to_y(target), border)
    return peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim_y(pred: Tensor, target: Tensor, border: int = 0) -> Tensor:
    """Per-image SSIM on Y: ``(N, 3, H, W)`` x2 in [0, 1] -> ``(N,)`` in [-1, 1]."""
    p, t = shave(rgb_to_y(pred.clamp(0, 1)), border), shave(rgb_to_y(target), border)
    return structural_similarity_index_measure(p, t, data_range=1.0, reduction="none")


class SRMetrics(nn.Module):
    """PSNR-Y, SSIM-Y (shaved by ``scale``) and LPIPS (alex by default) of a batch.

    Args:
        scale: SR factor, also the border shave.
        lpips_net: LPIPS trunk, ``"alex"`` (the usual metric), ``"vgg"`` or ``"squeeze"``.
        lpips_weights: backbone weights for LPIPS (``"imagenet"`` | path | ``None`` = random, which
            makes the LPIPS column meaningless; see ``weights.py``). ``lpips=False`` skips LPIPS.

    The LPIPS network is frozen and, like every loss of the library, not in ``state_dict()``.
    """

    def __init__(
        self, scale: int, lpips_weights: str | None = "imagenet", lpips: bool = True, lpips_net: str = "alex"
    ) -> None:
        super().__init__()
        self.scale = int(scale)
        self.lpips_net = lpips_net
        self.lpips = LPIPSLoss(net=lpips_net, reduction="none", weights=lpips_weights) if lpips else None

    @torch.no_grad()
    def forward(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """``pred, target: (N, 3, H, W)`` in [0, 1] (pred is clamped) -> ``{metric: (N,)}``."""
        pred = pred.clamp(0, 1)
        scores = {"psnr": psnr_y(pred, target, self.scale), "ssim": ssim_y(pred, target, self.scale)}
        if self.lpips is not None:
            scores["lpips"] = self.lpips(shave(pred, self.scale), shave(target, self.scale)).float()
        return scores
