"""Super-resolution networks (ESPCN, a small EDSR/SRResNet) and an SRGAN-style discriminator.

Every generator maps ``lr: (N, 3, h, w)`` in [0, 1] to ``sr: (N, 3, scale*h, scale*w)``, roughly in
[0, 1] (not clamped: clamping would zero the gradient of saturated pixels; clamp for metrics and
files). With ``residual=True`` (default) the network predicts a correction on top of bicubic
upsampling, ``sr = bicubic(lr) + net(lr)``, and its last layer starts at zero, so training starts
exactly at the bicubic baseline and only has to learn the missing detail. Each generator names its
final convolution ``last`` (``generator.last.weight`` is what VQGAN's adaptive adversarial weight
needs).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

SCALES = (2, 3, 4)


def bicubic_upsample(lr: Tensor, scale: int) -> Tensor:
    """``(N, C, h, w)`` -> ``(N, C, scale*h, scale*w)`` bicubic upsampling (not clamped)."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)


def _check_scale(scale: int) -> int:
    if int(scale) not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}; got {scale!r}.")
    return int(scale)


class _ResidualOverBicubic(nn.Module):
    """Shared forward: ``bicubic(lr) + body(lr)`` or ``body(lr)``."""

    scale: int
    residual: bool

    def body(self, lr: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, lr: Tensor) -> Tensor:
        """``lr: (N, 3, h, w)`` in [0, 1] -> ``(N, 3, scale*h, scale*w)``, roughly in [0, 1]."""
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"expected an LR batch of shape (N, 3, h, w); got {tuple(lr.shape)}.")
        out = self.body(lr)
        return bicubic_upsample(lr, self.scale) + out if self.residual else out

    def _zero_last(self) -> None:
        if self.residual:  # start exactly at the bicubic baseline
            nn.init.zeros_(self.last.weight)
            nn.init.zeros_(self.last.bias)


class ESPCN(_ResidualOverBicubic):
    """Shi et al. 2016: two convolutions in LR space, then a sub-pixel (PixelShuffle) layer.

    Args:
        scale: 2, 3 or 4.
        features: channels of the two hidden layers (the paper: 64, 32).
        residual: predict a correction on top of bicubic upsampling (see module doc).
    """

    def __init__(self, scale: int = 2, features: tuple[int, int] = (64, 32), residual: bool = True) -> None:
        super().__init__()
        self.scale, self.residual = _check_scale(scale), residual
        f1, f2 = (int(f) for f in features)
        self.features = nn.Sequential(
            nn.Conv2d(3, f1, 5, padding=2), nn.Tanh(), nn.Conv2d(f1, f2, 3, padding=1), nn.Tanh()
        )  # fmt: skip
        self.last = nn.Conv2d(f2, 3 * self.scale**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(self.scale)
        self._zero_last()

    def body(self, lr: Tensor) -> Tensor:
        return self.shuffle(self.last(self.features(lr)))


class ResBlock(nn.Module):
    """EDSR's residual block: conv-ReLU-conv, no batch norm, scaled skip."""

    def __init__(self, width: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(width, width, 3, padding=1), nn.Conv2d(width, width, 3, padding=1)
        self.res_scale = float(res_scale)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res_scale * self.conv2(F.relu(self.conv1(x)))


class EDSR(_ResidualOverBicubic):
    """A small EDSR (Lim et al. 2017) / SRResNet without batch norm.

    head conv -> ``blocks`` residual blocks (+ global skip) -> PixelShuffle x2 stages (one x3
    stage for scale 3) -> ``last`` conv.

    Args:
        scale: 2, 3 or 4.
        width: feature channels (the EDSR baseline: 64, 16 blocks; the demo default is smaller).
        blocks: number of residual blocks.
        res_scale: residual scaling (EDSR uses 0.1 for very wide models).
        residual: predict a correction on top of bicubic upsampling (see module doc).
    """

    def __init__(
        self, scale: int = 2, width: int = 32, blocks: int = 4, res_scale: float = 1.0, residual: bool = True
    ) -> None:
        super().__init__()
        self.scale, self.residual = _check_scale(scale), residual
        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.Sequential(*(ResBlock(width, res_scale) for _ in range(int(blocks))))
        self.fuse = nn.Conv2d(width, width, 3, padding=1)
        factors = [3] if self.scale == 3 else [2] * int(math.log2(self.scale))
        self.upsample = nn.Sequential(
            *(layer for f in factors for layer in (nn.Conv2d(width, width * f * f, 3, padding=1), nn.PixelShuffle(f)))
        )
        self.last = nn.Conv2d(width, 3, 3, padding=1)
        self._zero_last()

    def body(self, lr: Tensor) -> Tensor:
        x = self.head(lr)
        x = x + self.fuse(self.blocks(x))
        return self.last(self.upsample(x))


class Discriminator(nn.Module):
    """A small SRGAN-style discriminator: strided conv blocks, global average pool, one logit.

    Accepts any HR size (the pool makes it size-agnostic).

    Shape: ``(N, 3, H, W)`` in [0, 1] -> logits ``(N, 1)``.

    Args:
        width: channels of the first block; doubled at each of the ``depth`` strided stages.
        depth: number of stride-2 stages.
    """

    def __init__(self, width: int = 32, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.LeakyReLU(0.2)]
        channels = width
        for i in range(int(depth)):
            out = width * 2 ** (i + 1) if i else width
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            layers += [nn.Conv2d(out, out, 3, padding=1), nn.LeakyReLU(0.2)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, 1)

    def forward(self, image: Tensor) -> Tensor:
        """``(N, 3, H, W)`` -> ``(N, 1)`` logits (input mapped from [0, 1] to [-1, 1])."""
        return self.head(self.features(image * 2 - 1).mean(dim=(2, 3)))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["EDSR", "ESPCN", "SCALES", "Discriminator", "ResBlock", "bicubic_upsample", "count_parameters"]
