"""Quick start: train a tiny deblurring network for a few steps with each loss.

    python -m examples.quickstart [--steps 40] [--weights auto|imagenet|none|PATH]

Images are generated procedurally (no download). ``--weights auto`` (default) uses torchvision's
ImageNet weights when they are cached or downloadable and otherwise falls back to random
backbone weights with a loud warning: random weights show the mechanics (the loss goes down), not
perceptual quality. The table says which weights were used.
"""

from __future__ import annotations

import argparse
import logging
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from perceptual_loss import LPIPSLoss, MissingWeightsError, PerceptualLoss, StyleLoss

logger = logging.getLogger("quickstart")


def synthetic_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """``(count, 3, size, size)`` images in [0, 1]: coloured sinusoid textures with discs on top."""
    generator = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = torch.zeros(count, 3, size, size)
    for i in range(count):
        for c in range(3):
            fx, fy, phase = (torch.rand(3, generator=generator) * torch.tensor([12.0, 12.0, 2 * math.pi])).tolist()
            images[i, c] = 0.5 + 0.25 * torch.sin(fx * xs * math.pi + fy * ys * math.pi + phase)
        for _ in range(3):
            cx, cy, r = torch.rand(3, generator=generator).tolist()
            disc = ((xs - cx) ** 2 + (ys - cy) ** 2) < (0.05 + 0.2 * r) ** 2
            images[i, :, disc] = torch.rand(3, 1, generator=generator)
    return images.clamp(0, 1)


def blur(images: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    radius = int(3 * sigma)
    taps = torch.exp(-(torch.arange(-radius, radius + 1.0) ** 2) / (2 * sigma**2))
    kernel = (taps / taps.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    return F.conv2d(F.conv2d(padded, kernel, groups=3), kernel.transpose(-1, -2), groups=3)


class TinyDeblur(nn.Module):
    """Three convolutions predicting a residual on top of the blurred input."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 3, 3, padding=1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.body(x)).clamp(0, 1)


def build_losses(weights: str | None) -> dict[str, nn.Module]:
    return {
        "PerceptualLoss(relu2_2, relu3_3)": PerceptualLoss(["relu2_2", "relu3_3"], weights=weights),
        "StyleLoss(Johnson layers)": StyleLoss(weights=weights),
        "LPIPSLoss(net='alex')": LPIPSLoss(net="alex", weights=weights),
        "LPIPSLoss(net='vgg')": LPIPSLoss(net="vgg", weights=weights),
    }


def resolve_weights(choice: str) -> tuple[dict[str, nn.Module], str]:
    if choice == "none":
        return build_losses(None), "random (weights=None): mechanics only, not perceptual"
    if choice != "auto":
        return build_losses(choice), choice
    try:
        return build_losses("imagenet"), "ImageNet (torchvision)"
    except MissingWeightsError as error:
        logger.warning("=" * 78)
        logger.warning("IMAGENET WEIGHTS NOT AVAILABLE: falling back to RANDOM backbone weights.")
        logger.warning("The losses below still go down, but they are NOT perceptual. Cause:\n%s", error)
        logger.warning("=" * 78)
        return build_losses(None), "RANDOM (ImageNet weights unavailable): mechanics only, not perceptual"


def train(loss: nn.Module, hr: torch.Tensor, lr: torch.Tensor, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = TinyDeblur()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    with torch.no_grad():
        first = loss(model(lr), hr).item()
    for _ in range(steps):
        value = loss(model(lr), hr)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    with torch.no_grad():
        last = loss(model(lr), hr).item()
    return first, last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--weights", default="auto", help="auto | imagenet | none | path to a weights file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    hr = synthetic_images(args.batch, args.size)
    lr = blur(hr)
    losses, weights_note = resolve_weights(args.weights)
    print(f"Backbone weights: {weights_note}", flush=True)
    print(f"{'loss':36s} {'before':>10s} {'after':>10s}  down?  seconds")
    all_down = True
    for name, loss in losses.items():
        start = time.perf_counter()
        before, after = train(loss, hr, lr, args.steps)
        down = after < before
        all_down &= down
        print(
            f"{name:36s} {before:10.4g} {after:10.4g}  {'yes' if down else 'NO ':5s}  {time.perf_counter() - start:6.1f}",
            flush=True,
        )
    return 0 if all_down else 1


if __name__ == "__main__":
    raise SystemExit(main())
