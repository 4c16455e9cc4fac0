"""What a trunk takes as input: RGB images ``(N, 3, H, W)``, or volumes ``(N, C, D, H, W)`` for a 3-D module."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class InputSpec:
    """What a trunk's input looks like: ``channels`` and ``spatial_dims`` (2: images ``(N, C, H, W)``,
    3: volumes ``(N, C, D, H, W)``)."""

    channels: int = 3
    spatial_dims: int = 2

    def shape(self, *sides: int) -> tuple[int, ...]:
        """One sample's input shape of ``sides`` (one side: a square or cube)."""
        if len(sides) == 1:
            sides = sides * self.spatial_dims
        if len(sides) != self.spatial_dims:  # a 2-D size asked of a volume: the cube of its larger side
            sides = (max(sides),) * self.spatial_dims
        return (1, self.channels, *sides)


IMAGES = InputSpec()


def input_spec(module: nn.Module) -> InputSpec:
    """A 3-D trunk (its first convolution a ``Conv3d``: MedicalNet, MONAI's networks) takes
    volumes of that convolution's channels; any other, RGB images."""
    first = next((m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)
    if isinstance(first, nn.Conv3d):
        return InputSpec(first.in_channels, 3)
    return IMAGES
