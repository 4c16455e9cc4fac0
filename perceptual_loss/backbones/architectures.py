"""The classic loss networks' layers, as torchvision defines them, written out as tables.

AlexNet, the eight VGGs and SqueezeNet 1.1 are a ``features`` stack and a classifier. The trunks
of :mod:`.classic` keep only (part of) ``features``, so they are built here from tables, with the
same layers, attribute names and parameter shapes as ``torchvision.models.<name>().features``:
the weights files torchvision caches load into them unchanged, and the classic path needs no
``import torchvision`` (a second of start-up on a CPU, which ``perceptual-loss eval`` would pay
on every run, as torchvision imports ``torch._dynamo``). The classifier is described only by its
parameter shapes, which the weights check needs. Tests compare every table with torchvision's
model: layer by layer, state dict keys and shapes, and outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..frozen import mode_free

VGG_BLOCKS = {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
"""Convolutions per block of each VGG (torchvision's configurations A, B, D, E)."""
VGG_WIDTHS = (64, 128, 256, 512, 512)
"""Output channels of each VGG block."""

SQUEEZENET1_1_FIRES = {3: (64, 16, 64), 4: (128, 16, 64), 6: (128, 32, 128), 7: (256, 32, 128), 9: (256, 48, 192),
                       10: (384, 48, 192), 11: (384, 64, 256), 12: (512, 64, 256)}  # fmt: skip
"""``features`` index -> (input channels, squeeze channels, channels of each expand path) of SqueezeNet 1.1's Fires."""

CLASSIFIERS: dict[str, dict[str, tuple[int, ...]]] = {
    "alexnet": {"classifier.1": (4096, 256 * 6 * 6), "classifier.4": (4096, 4096), "classifier.6": (1000, 4096)},
    "vgg": {"classifier.0": (4096, 512 * 7 * 7), "classifier.3": (4096, 4096), "classifier.6": (1000, 4096)},
    "squeezenet1_1": {"classifier.1": (1000, 512, 1, 1)},
}
"""Weight shape of each classifier layer (each also has a bias), as in torchvision's files."""


@mode_free
class Fire(nn.Module):
    """SqueezeNet's Fire module: a 1x1 squeeze, then 1x1 and 3x3 expand paths, concatenated.

    The same attributes and parameters as ``torchvision.models.squeezenet.Fire``.

    Shape: ``(N, inplanes, H, W)`` -> ``(N, expand1x1_planes + expand3x3_planes, H, W)``.
    """

    def __init__(self, inplanes: int, squeeze_planes: int, expand1x1_planes: int, expand3x3_planes: int) -> None:
        super().__init__()
        self.inplanes = inplanes
        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


def _alexnet() -> list[nn.Module]:
    return [
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
    ]  # fmt: skip


def _vgg(convs_per_block: tuple[int, ...], batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    channels = 3
    for convs, width in zip(convs_per_block, VGG_WIDTHS, strict=True):
        for _ in range(convs):
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=1))
            layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)] if batch_norm else [nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return layers


def _squeezenet1_1() -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, kernel_size=3, stride=2), nn.ReLU(inplace=True)]
    for index in range(2, 13):
        if index in SQUEEZENET1_1_FIRES:
            inplanes, squeeze, expand = SQUEEZENET1_1_FIRES[index]
            layers.append(Fire(inplanes, squeeze, expand, expand))
        else:
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
    return layers


CLASSIC_BACKBONES = ("alexnet", *VGG_BLOCKS, *(f"{name}_bn" for name in VGG_BLOCKS), "squeezenet1_1")
"""The networks these tables build."""


def classic_features(backbone: str) -> nn.Sequential:
    """``torchvision.models.<backbone>(weights=None).features``, built from the tables (on the
    current default device, e.g. inside ``with torch.device("meta")``), with PyTorch's default init."""
    if backbone == "alexnet":
        return nn.Sequential(*_alexnet())
    if backbone == "squeezenet1_1":
        return nn.Sequential(*_squeezenet1_1())
    name = backbone.removesuffix("_bn")
    if name not in VGG_BLOCKS:
        raise ValueError(f"{backbone!r} is not a classic backbone; choose one of {CLASSIC_BACKBONES}.")
    return nn.Sequential(*_vgg(VGG_BLOCKS[name], batch_norm=backbone.endswith("_bn")))


def classic_state_shapes(backbone: str, features: nn.Sequential) -> dict[str, Tensor]:
    """The full model's state dict as meta tensors (``features`` and classifier): what a weights
    file of ``backbone`` must hold, keys and shapes, as torchvision's model has them."""
    expected = {f"features.{key}": value.to("meta") for key, value in features.state_dict().items()}
    for key, shape in CLASSIFIERS["vgg" if backbone.startswith("vgg") else backbone].items():
        expected[f"{key}.weight"] = torch.empty(shape, device="meta")
        expected[f"{key}.bias"] = torch.empty(shape[0], device="meta")
    return expected
