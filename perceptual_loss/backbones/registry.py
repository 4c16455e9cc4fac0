"""Which backbones exist, what their taps are called, and how their inputs are normalised.

A backbone is named as torchvision names its classification models (``"resnet50"``,
``"convnext_small"``, ``"vit_b_16"``: :func:`list_backbones`), or given as an ``nn.Module``. The
classic loss networks (the VGGs with and without BatchNorm, ``alexnet``, ``squeezenet1_1``) also
answer to the names of the perceptual-loss literature (``relu2_2``, ``conv5_4``, ``bn1_1``,
``fire4``), which are aliases of torchvision node names (``relu2_2`` of VGG16 is ``features.8``).
"""

from __future__ import annotations

import difflib
import functools
import logging
import re
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from ..weights import CLASSIC_IMAGENET_FILES, WeightsArg, weights_entry, weights_enum
from . import classic
from .inputs import input_spec

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

STATISTICS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "clip": (CLIP_MEAN, CLIP_STD),
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
"""Input statistics by name, for ``normalize="clip"`` and the like: ``imagenet`` (torchvision's,
timm's and DINOv2's), ``clip`` (OpenAI CLIP's, also open_clip's and EVA's), ``siglip`` (SigLIP's
and Inception's: ``[-1, 1]`` input)."""

Normalize = bool | Literal["imagenet", "clip", "siglip"]
"""``True`` (the weights' or the trunk's own statistics) | ``False`` (none: ``[0, 1]`` images as
they are) | a name of :data:`STATISTICS`."""

_TRANSFORMERS_STATISTICS = {"clip": "clip", "clip_vision_model": "clip", "siglip": "siglip",
                            "siglip_vision_model": "siglip", "siglip2_vision_model": "siglip"}  # fmt: skip
"""transformers' ``config.model_type`` -> the statistics its image processor uses (others: ImageNet's)."""

Backbone = str | nn.Module
"""A torchvision classification model name, or the user's own ``nn.Module``."""


@functools.lru_cache(maxsize=1)
def list_backbones() -> list[str]:
    """Every torchvision classification model name ``backbone=`` takes, sorted.

    Examples:
        >>> "resnet50" in list_backbones() and "vit_b_16" in list_backbones()
        True
    """
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_backbone_name(name: str) -> str:
    """``name`` if torchvision has such a classifier; otherwise an error listing the close and all names."""
    if name in classic.TAPS:  # known without importing torchvision
        return name
    names = list_backbones()
    if name in names:
        return name
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown backbone {name!r}.{hint} Choose a torchvision classification model: {', '.join(names)}; "
        f"or pass an nn.Module of your own."
    )


def build_model(name: str, meta: bool) -> nn.Module:
    """torchvision's ``name`` with random weights, in eval mode; on the meta device when ``meta``
    and the constructor allows it (RegNet's computes its widths with tensors, so it is built on CPU)."""
    import torchvision

    if meta:
        try:
            with torch.device("meta"):
                return torchvision.models.get_model(name, weights=None).eval()
        except (NotImplementedError, RuntimeError):
            pass
    return torchvision.models.get_model(name, weights=None).eval()


@functools.lru_cache(maxsize=64)
def _torchvision_taps(name: str) -> tuple[str, ...]:
    from . import graph

    model = build_model(name, meta=True)
    traced, qualnames = graph.trace(model, name)
    return tuple(graph.node_names(traced, qualnames))


def available_taps(backbone: Backbone) -> list[str]:
    """Tap names of ``backbone`` in network order.

    torchvision's node names (what ``get_graph_node_names`` lists in eval mode) and ``logits``;
    the classic networks list their literature names (``conv1_1``, ``relu1_1``, ...) first. A
    module torch.fx cannot trace lists its submodule names (``model.named_modules()``) and
    ``logits``: it is tapped through forward hooks.

    Examples:
        >>> available_taps("vgg16")[:3]
        ['conv1_1', 'relu1_1', 'conv1_2']
        >>> [t for t in available_taps("resnet18") if t.startswith("layer4.1")][-2:]
        ['layer4.1.add', 'layer4.1.relu_1']
        >>> available_taps("resnet18")[-1]
        'logits'
    """
    from . import graph

    if isinstance(backbone, nn.Module):
        try:
            traced, qualnames = graph.trace(graph.detached_copy(backbone).eval(), type(backbone).__name__)
        except graph.TraceError:  # tapped through forward hooks: its submodules by name
            return [name for name, _ in backbone.named_modules() if name] + [graph.LOGITS]
        return graph.node_names(traced, qualnames)
    name = check_backbone_name(backbone)
    return [*classic.TAPS.get(name, {}), *_torchvision_taps(name)]


def default_normalization(backbone: Backbone, weights: WeightsArg) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The ``(mean, std)`` the weights were trained with, on ``[0, 1]`` images.

    From the torchvision weights entry's ``transforms()`` when ``weights`` names one (ImageNet's
    statistics for all but a few, e.g. VGG16's ``IMAGENET1K_FEATURES``); for a module, what it
    carries itself (:func:`module_statistics`); ImageNet's otherwise.
    """
    if isinstance(backbone, nn.Module):
        return module_statistics(backbone)
    entry = weights_entry(backbone, weights) if isinstance(backbone, str) and isinstance(weights, str) else None
    if entry is not None:
        if entry.backbone in CLASSIC_IMAGENET_FILES and entry.name == "IMAGENET1K_V1":
            return IMAGENET_MEAN, IMAGENET_STD  # what their IMAGENET1K_V1 transforms say (tested)
        enum = weights_enum(entry.backbone, entry.name)
        if enum is not None:
            transform = enum.transforms()
            mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
            if mean is not None and std is not None:
                return tuple(float(m) for m in mean), tuple(float(s) for s in std)
    return IMAGENET_MEAN, IMAGENET_STD


def module_statistics(module: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The ``(mean, std)`` a module says it was trained with, else ImageNet's; logged either way.

    Read from, in order: timm's ``pretrained_cfg`` (``mean``, ``std``), open_clip's
    ``image_mean``/``image_std`` (a visual tower), transformers' ``config.model_type`` (CLIP's
    statistics for CLIP, ``[-1, 1]`` input for SigLIP: what their image processors do).
    ``mean=, std=`` or ``normalize="clip"`` override it.
    """
    found: tuple[Any, Any, str] | None = None
    cfg = getattr(module, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("mean") is not None and cfg.get("std") is not None:
        found = (cfg["mean"], cfg["std"], "its timm pretrained_cfg")
    elif getattr(module, "image_mean", None) is not None and getattr(module, "image_std", None) is not None:
        found = (module.image_mean, module.image_std, "its image_mean/image_std (open_clip)")
    else:
        model_type = getattr(getattr(module, "config", None), "model_type", None)
        if model_type in _TRANSFORMERS_STATISTICS:
            name = _TRANSFORMERS_STATISTICS[model_type]
            found = (*STATISTICS[name], f"its transformers model_type {model_type!r} ({name}'s statistics)")
    if found is None:
        spec = input_spec(module)
        if spec.spatial_dims == 3:
            raise ValueError(
                f"{type(module).__name__} takes {spec.channels}-channel volumes, for which no input statistics are "
                "assumed (ImageNet's are for RGB images): pass normalize=False to feed the volumes as they are (e.g. "
                "standardised ones, MedicalNet's convention), or mean=, std= (one value per channel)."
            )
        logger.info("%s carries no input statistics: ImageNet's are used (set mean=, std= or normalize=)",
                    type(module).__name__)  # fmt: skip
        return IMAGENET_MEAN, IMAGENET_STD
    mean, std, source = found
    logger.info("%s: input statistics mean=%s std=%s from %s", type(module).__name__, tuple(mean), tuple(std), source)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def native_size(module: nn.Module) -> int | None:
    """The input size a module says it was built for (timm's ``pretrained_cfg["input_size"]``,
    open_clip's ``image_size``, transformers' ``config.image_size``), or ``None``: where probing starts."""
    cfg = getattr(module, "pretrained_cfg", None)
    for size in (
        cfg.get("input_size") if isinstance(cfg, dict) else None,
        getattr(module, "image_size", None),
        getattr(getattr(module, "config", None), "image_size", None),
    ):
        if isinstance(size, (tuple, list)) and size:
            size = size[-1]
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            return size
    return None


NO_NORMALIZATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
"""``(mean, std)`` of ``normalize=False``: the network sees ``[0, 1]`` images as they are."""


def input_statistics(
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    normalize: Normalize,
    default: tuple[Sequence[float], Sequence[float]] | None = None,
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``(mean, std)`` as given, each ``None`` replaced by ``default``'s (without one: ``None``,
    the weights' own, filled in later), :data:`NO_NORMALIZATION` for ``normalize=False``
    (BasicSR's ``use_input_norm=False``), or the named statistics (``normalize="clip"``)."""
    if isinstance(normalize, str):
        if normalize not in STATISTICS:
            raise ValueError(f"Unknown normalize={normalize!r}; choose True, False or one of {tuple(STATISTICS)}.")
        if mean is not None or std is not None:
            raise ValueError(
                f"normalize={normalize!r} names the statistics, and mean/std give them: give one or the other."
            )
        return STATISTICS[normalize]
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True, False or one of {tuple(STATISTICS)}; got {normalize!r}.")
    if not normalize:
        if mean is not None or std is not None:
            raise ValueError(
                "normalize=False feeds the network [0, 1] images as they are, and mean/std normalise them: give one "
                "or the other."
            )
        return NO_NORMALIZATION
    if default is not None:
        mean, std = default[0] if mean is None else mean, default[1] if std is None else std
    return (
        None if mean is None else tuple(float(m) for m in mean),
        None if std is None else tuple(float(s) for s in std),
    )


def backbone_name(backbone: Backbone) -> str:
    """A name for messages: the torchvision name, or the module's class name."""
    return backbone if isinstance(backbone, str) else type(backbone).__name__


def classic_indices(backbone: Backbone, taps: Sequence[str]) -> dict[str, int] | None:
    """``{tap: features index}`` when every tap of a classic backbone lies in ``features``; else ``None``."""
    if not isinstance(backbone, str) or backbone not in classic.TAPS:
        return None
    for tap in taps:
        if re.fullmatch(r"bn\d+_\d+", tap) and tap not in classic.TAPS[backbone] and f"{backbone}_bn" in classic.TAPS:
            raise ValueError(
                f"{tap} is a BatchNorm layer of {backbone}_bn; {backbone} has none. Use backbone='{backbone}_bn' "
                f"(BasicSR's vgg_type='{backbone}_bn'), or tap conv{tap[2:]} / relu{tap[2:]} of {backbone}."
            )
    indices = {tap: classic.features_index(backbone, tap) for tap in taps}
    if any(index is None for index in indices.values()):
        return None
    return indices  # type: ignore[return-value]
