"""Johnson et al.'s image-transformation network, small enough for a CPU demo."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvLayer(nn.Sequential):
    """Reflection-padded conv -> instance norm -> ReLU (``norm``/``relu`` optional)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, norm: bool = True, relu: bool = True) -> None:
        layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride)]
        if norm:
            layers.append(nn.InstanceNorm2d(cout, affine=True))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 conv layers with instance norm and an identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvLayer(channels, channels, 3), ConvLayer(channels, channels, 3, relu=False))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Upsample(nn.Sequential):
    """Nearest x2 upsampling then a conv layer (no checkerboard artefacts of transposed convs)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), ConvLayer(cin, cout, 3))


class TransformerNet(nn.Module):
    """9x9 conv, two stride-2 convs, ``residual_blocks`` residual blocks, two x2 upsamplings, 9x9 conv.

    Johnson et al. use ``channels=32`` and 5 residual blocks; the demo default is smaller. Input and
    output are ``(N, 3, H, W)`` in [0, 1] (a sigmoid output); ``H`` and ``W`` are padded to a
    multiple of 4 inside and cropped back.
    """

    def __init__(self, channels: int = 16, residual_blocks: int = 3) -> None:
        super().__init__()
        c = int(channels)
        self.net = nn.Sequential(
            ConvLayer(3, c, 9),
            ConvLayer(c, 2 * c, 3, stride=2),
            ConvLayer(2 * c, 4 * c, 3, stride=2),
            *[ResidualBlock(4 * c) for _ in range(int(residual_blocks))],
            Upsample(4 * c, 2 * c),
            Upsample(2 * c, c),
            ConvLayer(c, 3, 9, norm=False, relu=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        return torch.sigmoid(self.net(x))[..., :h, :w]
