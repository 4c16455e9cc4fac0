"""Frozen backbones that return named intermediate features ("taps").

- :mod:`.registry`: which backbones exist, their tap names, their normalisation;
- :mod:`.classic`: the classic loss networks (VGGs, AlexNet, SqueezeNet) as sliced ``features`` with literature names;
- :mod:`.architectures`: their layers, written out as torchvision defines them (no torchvision import);
- :mod:`.graph`: any torchvision classifier or user module, traced by torch.fx, by node name;
- :mod:`.layers`: drop-in layers that keep less for backward or no mutable state;
- :mod:`.extractor`: :class:`FeatureExtractor`, the one entry point over all of them.
"""

from .classic import POOLINGS, TAPS, Pooling
from .extractor import CHANNELS_LAST_DEVICES, INPUT, FeatureExtractor, Features, MultipleOf, Resize, ShortSide
from .layers import FireSharingOutput, FrozenBatchNorm, L2Pool2d, MaxPool2dRecomputingIndices
from .registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    STATISTICS,
    Backbone,
    Normalize,
    available_taps,
    default_normalization,
    list_backbones,
)

__all__ = [
    "CHANNELS_LAST_DEVICES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INPUT",
    "POOLINGS",
    "STATISTICS",
    "TAPS",
    "Backbone",
    "FeatureExtractor",
    "Features",
    "FireSharingOutput",
    "FrozenBatchNorm",
    "L2Pool2d",
    "MaxPool2dRecomputingIndices",
    "MultipleOf",
    "Normalize",
    "Pooling",
    "Resize",
    "ShortSide",
    "available_taps",
    "default_normalization",
    "list_backbones",
]
