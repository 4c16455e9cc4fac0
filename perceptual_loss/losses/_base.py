"""The flow every perceptual loss shares: check, extract, compare, reduce."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, Union

import torch
from torch import Tensor, nn

from ..backbones import FeatureExtractor, Features
from ..validation import Grayscale, check_pair, check_range

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")
Layers = Union[Sequence[str], Mapping[str, float]]
"""A list of layer names (weight 1 each) or a ``{name: weight}`` mapping."""


def parse_layers(layers: Layers) -> dict[str, float]:
    """``["relu2_2"]`` or ``{"relu2_2": 1.0}`` -> ``{"relu2_2": 1.0}``, with checks."""
    if isinstance(layers, str):
        raise TypeError(f"layers must be a list of names or a {{name: weight}} mapping, not a string; use [{layers!r}].")
    if isinstance(layers, Mapping):
        parsed = {str(name): float(weight) for name, weight in layers.items()}
    else:
        names = [str(name) for name in layers]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"Layer name(s) {duplicated} given more than once; give each layer once.")
        parsed = dict.fromkeys(names, 1.0)
    if not parsed:
        raise ValueError("layers is empty; name at least one layer, e.g. ['relu2_2'].")
    bad = {n: w for n, w in parsed.items() if not (math.isfinite(w) and w >= 0)}
    if bad:
        raise ValueError(f"Layer weights must be finite and >= 0; got {bad}.")
    return parsed


def reduce(values: Tensor, reduction: Reduction) -> Tensor:
    """``mean`` / ``sum`` over all elements, or ``none`` (values unchanged)."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def check_reduction(reduction: str) -> Reduction:
    if reduction not in REDUCTIONS:
        raise ValueError(f"Unknown reduction {reduction!r}; choose one of {REDUCTIONS}.")
    return reduction  # type: ignore[return-value]


class FeatureLoss(nn.Module):
    """Base of the perceptual losses: one frozen extractor plus one comparison.

    Subclasses define :meth:`prepare_target` (what is kept of the target's features, e.g. Gram
    matrices) and :meth:`compare` (pred features vs prepared target -> one value per sample). The
    combined criterion calls the same two methods on features it extracted once.
    """

    same_size: bool = True
    """Whether pred and target must have equal shapes (Gram-based losses do not need it)."""

    def __init__(
        self, extractor: FeatureExtractor, reduction: Reduction, check_inputs: bool, grayscale: Grayscale
    ) -> None:
        super().__init__()
        self.extractor = extractor
        self.reduction = check_reduction(reduction)
        self.check_inputs = check_inputs
        if grayscale not in (None, "repeat"):
            raise ValueError(f"grayscale must be None or 'repeat'; got {grayscale!r}.")
        self.grayscale = grayscale
        self._warned = [False]

    @property
    def min_size(self) -> int:
        """Smallest height and width the chosen layers accept."""
        return self.extractor.min_size

    def prepare_target(self, features: Features) -> Features:
        """What the comparison needs of the target's features (identity by default)."""
        return features

    def compare(self, pred_features: Features, target: Features, image_size: tuple[int, int]) -> Tensor:
        """Per-sample values ``(N,)`` (or a map) from pred features and a prepared target."""
        raise NotImplementedError

    def check(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Validate a pair against this loss: metadata always, values when ``check_inputs``."""
        pred, target = check_pair(
            pred,
            target,
            min_size=self.min_size,
            layers_note=f"layers {list(self.extractor.taps)} of {self.extractor.backbone}",
            grayscale=self.grayscale,
            same_size=self.same_size,
        )
        reference = self.extractor.scale
        if pred.device != reference.device:
            raise ValueError(f"Inputs are on {pred.device} but the loss is on {reference.device}; call loss.to({str(pred.device)!r}).")
        if not torch.is_autocast_enabled(pred.device.type):
            for name, x in (("pred", pred), ("target", target)):
                if x.dtype != reference.dtype:
                    raise TypeError(
                        f"{name} has dtype {x.dtype} but the loss's weights are {reference.dtype}; call "
                        f"loss.to({x.dtype}), cast the input, or run under torch.autocast."
                    )
        if self.check_inputs:
            check_range(pred, target, self.extractor.input_range, self._warned)
        return pred, target

    def target_features(self, target: Tensor) -> Features:
        """Prepared target features; no autograd graph unless ``target`` requires grad."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and target.requires_grad):
            return self.prepare_target(self.extractor(target))

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Loss of ``pred`` against ``target``; see the subclass for shapes and ranges."""
        pred, target = self.check(pred, target)
        values = self.compare(self.extractor(pred), self.target_features(target), (pred.shape[-2], pred.shape[-1]))
        return reduce(values, self.reduction)
